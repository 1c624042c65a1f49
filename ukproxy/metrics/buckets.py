"""Histogram bucket bounds (seconds), shared by the Prometheus families and the hot-path tallies."""

# Request and upstream times of a proxy: sub-millisecond to a minute.
LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A unikernel boots in tens of milliseconds under KVM and in seconds under TCG.
BOOT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_WAIT = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
