"""Every Prometheus metric ukproxy exports, in one place, named by Prometheus conventions.

Import this module only after `PROMETHEUS_MULTIPROC_DIR` is set (see `multiproc.prepare`):
prometheus_client picks its value storage once, at import. Workers and the master both write
here; the master's /metrics merges every process's files.

Live gauges use 'livesum' (or 'liveall' where a per-process row is the point): a dead worker's
files are removed by `mark_process_dead`, so its connections vanish from the sums.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ukproxy.metrics.buckets import BOOT, LATENCY, QUEUE_WAIT

# connections, as nginx's stub_status
CONNECTIONS_ACCEPTED = Counter("ukproxy_connections_accepted", "Client connections accepted.")
CONNECTIONS_HANDLED = Counter("ukproxy_connections_handled", "Client connections handled (not dropped at once).")
CONNECTIONS_ACTIVE = Gauge(
    "ukproxy_connections_active", "Open client connections by state (reading, writing, waiting).",
    ["state"], multiprocess_mode="livesum")
WORKER_CONNECTIONS = Gauge(
    "ukproxy_worker_connections", "Open client connections of each live worker process.",
    ["worker"], multiprocess_mode="liveall")
WORKER_ACCEPTED = Gauge(
    "ukproxy_worker_accepted_connections", "Connections accepted by each live worker process since it started.",
    ["worker"], multiprocess_mode="liveall")
ACCEPT_ERRORS = Counter("ukproxy_accept_errors", "accept() failures (EMFILE and the like).")

# the accept mutex, per worker slot
ACCEPT_MUTEX_ACQUISITIONS = Counter(
    "ukproxy_accept_mutex_acquisitions", "Times a worker took the accept mutex.", ["worker"])
ACCEPT_DISABLED_SKIPS = Counter(
    "ukproxy_accept_disabled_skips", "Turns at the accept mutex a busy worker skipped (nginx's accept_disabled).",
    ["worker"])

# requests (http) and sessions (tcp)
REQUESTS = Counter(
    "ukproxy_requests", "HTTP requests answered, by listener, upstream and status class.",
    ["listener", "upstream", "status_class"])
REQUEST_DURATION = Histogram(
    "ukproxy_request_duration_seconds", "Time from the first byte of a request to the last byte of its answer.",
    ["listener", "upstream"], buckets=LATENCY)
UPSTREAM_RESPONSE_TIME = Histogram(
    "ukproxy_upstream_response_time_seconds", "Time spent with the upstream, from connect to the end of its answer.",
    ["upstream"], buckets=LATENCY)
TCP_SESSIONS = Counter(
    "ukproxy_tcp_sessions", "TCP (L4) sessions finished, by listener, upstream and status (200, 502; "
    "403 or 503 for one allow/deny or limit_conn closed, edge/tcp_guard.py).",
    ["listener", "upstream", "status"])
TCP_SENT_BYTES = Counter("ukproxy_tcp_sent_bytes", "Bytes sent to TCP clients.", ["listener"])
TCP_RECEIVED_BYTES = Counter("ukproxy_tcp_received_bytes", "Bytes received from TCP clients.", ["listener"])

# TLS and HTTP versions (tls/acceptor.py counts the handshakes)
TLS_HANDSHAKES = Counter("ukproxy_tls_handshakes", "TLS handshakes done (full or resumed), by listener and version.",
                         ["listener", "version"])
TLS_RESUMPTIONS = Counter("ukproxy_tls_resumptions", "TLS handshakes that resumed a session.", ["listener"])
TLS_HANDSHAKE_FAILURES = Counter(
    "ukproxy_tls_handshake_failures", "TLS connections that ended without a session, by reason (plain_http, "
    "not_tls, timeout, client_closed, no_shared_cipher, protocol_version, client_alert, tls_error).",
    ["listener", "reason"])
REQUESTS_BY_PROTOCOL = Counter("ukproxy_requests_by_protocol", "HTTP requests by listener and HTTP version.",
                               ["listener", "protocol"])

# HTTP/2 (proxy/h2_connection.py)
HTTP2_STREAMS = Counter("ukproxy_http2_streams", "HTTP/2 streams opened by clients.")
HTTP2_RESETS = Counter("ukproxy_http2_resets", "HTTP/2 RST_STREAM frames, by direction (received, sent).",
                       ["direction"])
HTTP2_GOAWAYS = Counter("ukproxy_http2_goaways", "HTTP/2 GOAWAY frames sent, by reason (drain, idle, "
                        "keepalive_requests, rapid_reset, control_flood, header_flood, protocol_error).", ["reason"])

# upstreams
UPSTREAM_FAILURES = Counter(
    "ukproxy_upstream_failures", "Failed upstream attempts by reason (connect, timeout, reset, protocol).",
    ["upstream", "reason"])
UPSTREAM_RETRIES = Counter("ukproxy_upstream_retries", "Requests or sessions tried again on another server.",
                           ["upstream"])
UPSTREAM_UNAVAILABLE = Counter(
    "ukproxy_upstream_unavailable", "Requests or sessions for which no server of the upstream could be reached.",
    ["upstream"])
TIMEOUTS = Counter("ukproxy_timeouts", "Timeouts that fired, by which one.", ["timeout"])

# workers (master side)
WORKER_RESTARTS = Counter("ukproxy_worker_restarts", "Workers that died unexpectedly and were started again.",
                          ["worker"])
WORKER_HUNG = Counter("ukproxy_worker_hung", "Workers killed because their heartbeat was late past "
                      "worker_heartbeat_timeout (then started again).", ["worker"])

# the VM fleet (called by the master's fleet and the workers' pools)
VMS = Gauge("ukproxy_vms", "VMs by upstream, worker and state (booting, idle, busy, down).",
            ["upstream", "worker", "state"], multiprocess_mode="livesum")
VM_BOOT_DURATION = Histogram("ukproxy_vm_boot_duration_seconds", "From QEMU start to the unikernel's ready line.",
                             ["upstream"], buckets=BOOT)
VM_REPLACEMENTS = Counter("ukproxy_vm_replacements", "VMs replaced, by reason (crashed, unhealthy, ...).",
                          ["upstream", "reason"])
VM_PLACEMENTS = Counter("ukproxy_vm_placements", "VMs placed on each CPU by the scheduler.", ["cpu"])
SERVER_ACTIVE = Gauge("ukproxy_upstream_server_active",
                      "Requests or tcp sessions in flight to each upstream server (VM), over the workers.",
                      ["upstream", "server"], multiprocess_mode="livesum")
SERVER_REQUESTS = Counter("ukproxy_upstream_server_requests",
                          "Requests or tcp sessions sent to each upstream server (VM).", ["upstream", "server"])
SERVER_LAST_CHECK = Gauge("ukproxy_upstream_server_last_check_timestamp_seconds",
                          "When the last active health check of each upstream server ran (Unix time).",
                          ["upstream", "server"], multiprocess_mode="livemax")
SERVER_CHECK_OK = Gauge("ukproxy_upstream_server_check_ok",
                        "1 if each worker's last active health check of the server passed, else 0 (the minimum).",
                        ["upstream", "server"], multiprocess_mode="livemin")
POOL_QUEUE_LENGTH = Gauge("ukproxy_pool_queue_length", "Requests waiting for a VM of the upstream's pools.",
                          ["upstream"], multiprocess_mode="livesum")
POOL_QUEUE_WAIT = Histogram("ukproxy_pool_queue_wait_seconds", "Time a request waited in a pool queue for a VM.",
                            ["upstream"], buckets=QUEUE_WAIT)
EDGE_REFUSED = Counter("ukproxy_edge_refused", "Requests refused before going upstream, by rule (limit_req, "
                       "limit_conn, access, auth_basic) and zone (edge/guard.py).", ["rule", "zone"])
LIMIT_REQ_DELAYED = Counter("ukproxy_limit_req_delayed", "Requests a limit_req zone delayed to keep to its rate.",
                            ["zone"])
WORKER_EVENTS = Counter("ukproxy_worker_events", "Other events the proxies count, by their key (http_errors:...).",
                        ["event"])
