"""The routing table: host specificity, longest prefix on segment boundaries, prefix strip, default, 404."""

from __future__ import annotations

import http.client

import pytest

from tests.proxy.clients import RawClient, get
from ukproxy.config import RouteConfig
from ukproxy.proxy.routing import Router

ROUTES = [
    RouteConfig(upstream="site", host="*", prefix="/"),
    RouteConfig(upstream="api", host="*", prefix="/api"),
    RouteConfig(upstream="api-v2", host="*", prefix="/api/v2/", strip_prefix=True),
    RouteConfig(upstream="static", host="*", prefix="/static", strip_prefix=True),
    RouteConfig(upstream="shop", host="shop.example.com", prefix="/"),
    RouteConfig(upstream="shop-api", host="shop.example.com", prefix="/api"),
    RouteConfig(upstream="tenants", host="*.example.com", prefix="/"),
    RouteConfig(upstream="deep-tenants", host="*.eu.example.com", prefix="/"),
    RouteConfig(upstream="only-admin", host="admin.example.org", prefix="/admin"),
]


@pytest.mark.parametrize(("host", "target", "upstream", "path"), [
    ("any.host", "/", "site", "/"),
    ("any.host", "/index.html?x=1", "site", "/index.html?x=1"),
    ("any.host", "/api", "api", "/api"),
    ("any.host", "/api/users?id=3", "api", "/api/users?id=3"),
    ("any.host", "/api?q=1", "api", "/api?q=1"),
    ("any.host", "/apix", "site", "/apix"),  # prefixes match whole segments
    ("any.host", "/api/v2/users", "api-v2", "/users"),  # longest prefix wins, stripped
    ("any.host", "/api/v2/", "api-v2", "/"),
    ("any.host", "/api/v2", "api", "/api/v2"),  # "/api/v2/" needs its slash
    ("any.host", "/static", "static", "/"),
    ("any.host", "/static?v=3", "static", "/?v=3"),
    ("any.host", "/static/css/a.css", "static", "/css/a.css"),
    ("shop.example.com", "/", "shop", "/"),
    ("shop.example.com", "/api/cart", "shop-api", "/api/cart"),
    ("shop.example.com", "/static/x", "shop", "/static/x"),  # an exact host's own routes come first
    ("a.example.com", "/x", "tenants", "/x"),
    ("b.eu.example.com", "/x", "deep-tenants", "/x"),  # the longer wildcard suffix is more specific
    ("example.com", "/x", "site", "/x"),  # "*.example.com" needs a label before it
    ("admin.example.org", "/admin/users", "only-admin", "/admin/users"),
    ("admin.example.org", "/other", "site", "/other"),  # no prefix of the host matches: less specific hosts
])
def test_route_table(host, target, upstream, path):
    match = Router(ROUTES).match(host, target.encode())
    assert match is not None
    assert (match.upstream, match.path) == (upstream, path.encode())


def test_listener_upstream_is_the_default_and_no_match_is_none():
    routes = [RouteConfig(upstream="api", host="api.test", prefix="/v1")]
    assert Router(routes, default_upstream="web").match("api.test", b"/v2").upstream == "web"
    assert Router(routes).match("api.test", b"/v2") is None
    assert Router(routes).match("other.test", b"/v1") is None
    assert Router(routes).match("api.test", b"/v1/x").upstream == "api"


def test_routes_through_the_proxy_compose_one_site(backends, ukproxy):
    from tests.proxy.conftest import http_config, start_on_free_port

    web, api, static = backends("web"), backends("api"), backends("static")
    more = f"""
[[upstream]]
name = "api"
servers = ["{api.address}"]
[[upstream]]
name = "static"
servers = ["{static.address}"]
[[route]]
host = "site.test"
prefix = "/"
upstream = "app"
[[route]]
host = "site.test"
prefix = "/api"
upstream = "api"
[[route]]
host = "site.test"
prefix = "/static/"
upstream = "static"
strip_prefix = true
"""
    _, port = start_on_free_port(
        lambda port: ukproxy(http_config(port, [web.address], more=more, listen_upstream=False)), 1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def fetch(host: str, path: str) -> tuple[int, bytes]:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()

    assert fetch("site.test", "/") == (200, b"web GET /")
    assert fetch("SITE.test:8080", "/api/users?id=1") == (200, b"api GET /api/users?id=1")
    assert fetch("site.test", "/static/app.js") == (200, b"static GET /app.js")
    assert fetch("site.test.", "/apix") == (200, b"web GET /apix")
    status, body = fetch("elsewhere.test", "/")
    assert status == 404
    assert body.startswith(b"404")
    # the 404 kept the connection, and absolute-form targets route by their authority
    with RawClient(port) as client:
        response = client.request(b"GET http://site.test/api/x HTTP/1.1\r\nHost: ignored.test\r\n\r\n")
        assert response.body == b"api GET /api/x"
        response = client.request(get("/", host="nowhere.test"))
        assert response.status == 404
        assert client.request(get("/static/y", host="site.test")).body == b"static GET /y"
