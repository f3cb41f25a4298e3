"""The SSRF guard through the real server: ALLOW_PRIVATE_URLS off, as in production.

Names are resolved by a patched resolver (socket.getaddrinfo), so a test can
make "images.example.test" point anywhere without a DNS server. Only refusals
are tested: no request ever leaves 127.0.0.1. tests/test_fetch.py tests the
guard itself, DNS rebinding included.
"""

import pytest

from harness.client import exchange
from server import fetch_address
from tests.conftest import ws_url

BOX = {"x": 1, "y": 1, "width": 5, "height": 5}


def refused(app, url):
    outcome = exchange(ws_url(app), {"image_url": url, "boxes": [BOX]})
    assert outcome.types == ["error"], outcome.messages
    return outcome


def test_the_server_refuses_its_own_loopback(start_app, image_server):
    app = start_app(allow_private_urls=False)
    before = image_server.hits["/rgb.png"]
    outcome = refused(app, image_server.url("/rgb.png"))
    assert outcome.last["code"] == "image_url_forbidden" and outcome.close_code == 1008
    assert image_server.hits["/rgb.png"] == before  # never fetched
    assert list(app.store.records()) == []


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.7"], ["169.254.169.254"], ["192.168.1.20"], ["::1"], ["fd00::5"], ["8.8.8.8", "10.0.0.7"]],
)
def test_a_name_resolving_to_a_private_address_is_refused(start_app, resolver, addresses):
    """Any one private address among the answers is enough to refuse."""
    resolver["images.example.test"] = addresses
    app = start_app(allow_private_urls=False)
    outcome = refused(app, "http://images.example.test/cat.png")
    assert outcome.last["code"] == "image_url_forbidden"
    assert "images.example.test" in outcome.last["message"]


def test_a_redirect_to_a_name_resolving_privately_is_refused(start_app, image_server, resolver, monkeypatch):
    # The image server's own 127.0.0.1 counts as public here, so the first hop is allowed.
    real_rule = fetch_address._is_forbidden
    monkeypatch.setattr(fetch_address, "_is_forbidden", lambda ip: str(ip) != "127.0.0.1" and real_rule(ip))
    resolver["metadata.example.test"] = ["169.254.169.254"]
    image_server.add_redirect("/hop", "http://metadata.example.test/latest/meta-data/")
    app = start_app(allow_private_urls=False)
    outcome = refused(app, image_server.url("/hop"))
    assert outcome.last["code"] == "image_url_forbidden"
    assert image_server.hits["/hop"] == 1  # the first hop was fetched, the second never


def test_a_url_whose_host_parsers_disagree_on_is_refused_unfetched(start_app, image_server, resolver, monkeypatch):
    """Read by urlsplit, the host is images.example.test; HTTP libraries connect to 127.0.0.1.

    The name resolves to an address counted as public here (and never
    connected to), so only reading the URL strictly stops the request.
    """
    real_rule = fetch_address._is_forbidden
    monkeypatch.setattr(fetch_address, "_is_forbidden", lambda ip: str(ip) != "198.51.100.7" and real_rule(ip))
    resolver["images.example.test"] = ["198.51.100.7"]
    image_server.add("/admin/x.png", b"secret")
    app = start_app(allow_private_urls=False)
    outcome = refused(app, f"http://127.0.0.1:{image_server.port}\\@images.example.test/../admin/x.png")
    assert outcome.last["code"] == "invalid_request" and "backslash" in outcome.last["message"]
    assert outcome.close_code == 1008
    assert image_server.hits["/admin/x.png"] == 0
    assert list(app.store.records()) == []
