"""server.fetch (and the fetch_* modules beside it): the SSRF-guarded download, against real local HTTP(S) servers.

Host names are resolved by a patched resolver (socket.getaddrinfo), so a test
can point "images.example.test" anywhere without a DNS server. Packets go to
127.0.0.1 only, except in the DNS rebinding test, which runs in a network
namespace of its own where 198.51.100.7 is an address on `lo`.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import unicodedata
from pathlib import Path

import pytest

from harness import image_files as files
from harness.http_server import ImageHTTPServer
from server import fetch, fetch_address, fetch_url
from server.errors import ClientError

MIB = 1024 * 1024
NAME = "images.example.test"
PUBLIC = "198.51.100.7"  # TEST-NET-2: counted as public by patched rules, reachable only in a namespace
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server():
    with ImageHTTPServer() as running:
        yield running


@pytest.fixture
def loopback_is_public(monkeypatch):
    """Treat 127.0.0.1 as a public address, so the guard lets the test server through."""
    real_rule = fetch_address._is_forbidden
    monkeypatch.setattr(fetch_address, "_is_forbidden", lambda ip: str(ip) != "127.0.0.1" and real_rule(ip))


def download(url: str, **overrides) -> bytes:
    options = dict(max_bytes=MIB, timeout=5.0, allow_private=True)
    options.update(overrides)
    return fetch.download(url, **options)


def error_of(url: str, **overrides) -> ClientError:
    with pytest.raises(ClientError) as caught:
        download(url, **overrides)
    return caught.value


# --- plain downloads ---------------------------------------------------------


def test_download_returns_the_body(server):
    body = files.png_rgb(20, 20)
    server.add("/cat.png", body)
    assert download(server.url("/cat.png")) == body
    assert server.hits["/cat.png"] == 1


def test_a_path_and_query_reach_the_server_as_written(server):
    server.add("/a%20b/c.png?size=2&x=%2F", b"image")
    assert download(server.url("/a%20b/c.png?size=2&x=%2F#fragment")) == b"image"


def test_an_inline_image_cannot_be_downloaded_again():
    error = error_of("data:image/png;base64,... (1234 bytes, sent inline)")
    assert error.code == "image_download_failed" and "data: URL" in error.message


def test_a_non_http_scheme_is_an_invalid_request():
    error = error_of("ftp://example.com/cat.png")
    assert error.code == "invalid_request" and "http" in error.message


def test_http_error_status_is_reported(server):
    error = error_of(server.url("/missing.png"))
    assert error.code == "image_download_failed"
    assert "404" in error.message and "127.0.0.1" in error.message


def test_server_error_status_is_reported(server):
    server.add("/broken.png", b"oops", status=503)
    error = error_of(server.url("/broken.png"))
    assert error.code == "image_download_failed" and "503" in error.message


def test_unreachable_port_fails():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = error_of(f"http://127.0.0.1:{port}/cat.png")
    assert error.code == "image_download_failed"


def test_dns_failure_fails(monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    error = error_of("http://cat-pictures.invalid/cat.png", allow_private=False)
    assert error.code == "image_download_failed"
    assert "cat-pictures.invalid" in error.message


def test_a_body_cut_short_of_its_content_length_fails(server):
    server.add_raw("/short.png", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n" + bytes(40))
    error = error_of(server.url("/short.png"))
    assert error.code == "image_download_failed" and "whole image" in error.message


def test_a_response_that_is_not_http_fails(server):
    server.add_raw("/garbage.png", b"SSH-2.0-OpenSSH_9.6\r\n")
    error = error_of(server.url("/garbage.png"))
    assert error.code == "image_download_failed" and "malformed" in error.message


# --- redirects ---------------------------------------------------------------


def test_relative_redirects_are_followed(server):
    body = files.png_rgb(8, 8)
    server.add("/images/cat.png", body)
    server.add_redirect("/start", "images/hop")
    server.add_redirect("/images/hop", "/images/cat.png", status=301)
    assert download(server.url("/start")) == body
    assert server.hits["/images/hop"] == 1


def test_redirects_up_to_the_limit_are_followed(server):
    server.add("/3", b"image")
    for hop in range(3):
        server.add_redirect(f"/{hop}", f"/{hop + 1}", status=307)
    assert download(server.url("/0"), max_redirects=3) == b"image"


def test_too_many_redirects_fail(server):
    server.add("/4", b"image")
    for hop in range(4):
        server.add_redirect(f"/{hop}", f"/{hop + 1}")
    error = error_of(server.url("/0"), max_redirects=3)
    assert error.code == "image_download_failed" and "redirect" in error.message
    assert server.hits["/4"] == 0


def test_redirect_to_another_scheme_fails(server):
    server.add_redirect("/ftp", "ftp://example.com/cat.png")
    assert error_of(server.url("/ftp")).code == "image_download_failed"


# --- byte limits: counted as they arrive, nothing decompressed ---------------


def test_honest_content_length_over_the_limit_is_refused(server):
    server.add("/big.png", bytes(5000))
    error = error_of(server.url("/big.png"), max_bytes=4999)
    assert error.code == "image_too_large" and "4,999" in error.message


def test_content_length_over_the_limit_is_refused_before_the_body(server):
    # Reading this body would take 5 s and hit the timeout; the header alone must suffice.
    server.add_slow("/big-slow.png", bytes(5000), delay_per_chunk=0.1, chunk_size=100)
    error = error_of(server.url("/big-slow.png"), max_bytes=4999, timeout=2.0)
    assert error.code == "image_too_large"


def test_body_exactly_at_the_byte_limit_is_accepted(server):
    server.add("/exact.png", bytes(5000))
    assert len(download(server.url("/exact.png"), max_bytes=5000)) == 5000


def test_missing_content_length_is_counted_while_streaming(server):
    server.add_lying_length("/stream.png", bytes(200_000), claimed_length=None)
    assert len(download(server.url("/stream.png"), max_bytes=200_000)) == 200_000
    error = error_of(server.url("/stream.png"), max_bytes=100_000)
    assert error.code == "image_too_large"


def test_lying_content_length_is_counted_while_streaming(server):
    server.add_lying_length("/liar.png", bytes(200_000), claimed_length=10)
    error = error_of(server.url("/liar.png"), max_bytes=100_000)
    assert error.code == "image_too_large"


def test_chunk_framing_counts_against_the_limit(server):
    """Ten bytes of image, each in a chunk carrying 60 kB of chunk extension: 600 kB on the wire."""
    chunks = b"".join(b"1;pad=" + b"x" * 60_000 + b"\r\nA\r\n" for _ in range(10))
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    server.add_raw("/framing.png", head + chunks + b"0\r\n\r\n")
    error = error_of(server.url("/framing.png"), max_bytes=100_000)
    assert error.code == "image_too_large" and "framing" in error.message


def test_headers_count_against_the_limit(server):
    """Five bytes of image after 90 headers of 60 kB each: 5.4 MB on the wire."""
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 60_000) for n in range(90))
    server.add_raw("/headers.png", b"HTTP/1.1 200 OK\r\n" + padding + b"Content-Length: 5\r\nConnection: close\r\n\r\nimage")
    error = error_of(server.url("/headers.png"), max_bytes=100_000)
    assert error.code == "image_too_large"


FLOODS = {
    # 20 MB, within the old limit (MAX_IMAGE_BYTES plus a 32nd plus 64 KiB, all counted together)
    "one-byte chunks": b"1\r\nA\r\n" * 3_400_000 + b"0\r\n\r\n",
    "trailer lines": b"5\r\nimage\r\n0\r\n" + b"a\r\n" * 6_800_000 + b"\r\n",
}


@pytest.mark.parametrize("flood", FLOODS)
def test_a_flood_of_framing_is_cut_off_at_its_own_allowance(server, flood):
    """Each chunk or trailer line is a turn of http.client's Python loop: 20 MB of them took 2.4 s of
    the GIL. Framing now has its own allowance, 64 KiB and a 32nd of the limit, however small the body."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    server.add_raw("/flood.png", head + FLOODS[flood])
    started = time.thread_time()  # this thread's CPU: the parsing, not the sending nor others' load
    error = error_of(server.url("/flood.png"), max_bytes=20 * MIB, timeout=30.0)
    spent = time.thread_time() - started
    assert error.code == "image_too_large" and "chunk framing besides the image" in error.message
    assert spent < 0.5, f"reading the framing took {spent:.2f} s of CPU"


EMPTY_DEFLATE_BLOCK = b"\x00\x00\x00\xff\xff"  # a stored block of 0 bytes, not the last one
GZIP_HEADER = gzip.compress(b"")[:10]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "gzip, identity"])
def test_an_encoded_body_is_refused_unread(server, encoding):
    """A gzip stream of empty deflate blocks expands to nothing forever; it is never decompressed."""
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nConnection: close\r\n\r\n".encode()
    server.add_raw("/bomb.png", head + GZIP_HEADER, then=EMPTY_DEFLATE_BLOCK * 10_000, for_seconds=10)
    started = time.monotonic()
    error = error_of(server.url("/bomb.png"), timeout=2.0)
    assert time.monotonic() - started < 1.0
    assert error.code == "image_download_failed" and "Accept-Encoding: identity" in error.message


def test_a_transfer_encoding_other_than_chunked_is_refused(server):
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
    server.add_raw("/te.png", head + b"5\r\nimage\r\n0\r\n\r\n")
    error = error_of(server.url("/te.png"))
    assert error.code == "image_download_failed" and "gzip" in error.message


# --- one deadline for the whole download ------------------------------------


def test_slow_drip_is_cut_off_by_the_whole_download_timeout(server):
    # Each chunk arrives well within the timeout; only the overall deadline stops it.
    server.add_slow("/slow.png", bytes(100 * 50), delay_per_chunk=0.1, chunk_size=100)
    error = error_of(server.url("/slow.png"), timeout=0.5)
    assert error.code == "image_download_failed"
    assert "0.5 s" in error.message


DRIPS = {
    # what is sent at once, then dripped one piece every 50 ms
    "status line": (b"HTTP/1.1 200 ", b"O"),
    "headers": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Drip: ", b"a"),
    "chunk framing": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;pad=", b"x"),
    "body without length": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"\x89"),
}


@pytest.mark.parametrize("part", DRIPS)
def test_a_dripping_server_is_cut_off_at_the_deadline(server, part):
    head, drip = DRIPS[part]
    server.add_raw("/drip.png", head, then=drip, every=0.05, for_seconds=10)
    started = time.monotonic()
    error = error_of(server.url("/drip.png"), timeout=1.0)
    elapsed = time.monotonic() - started
    assert error.code == "image_download_failed" and "1 s timeout" in error.message, error.message
    assert elapsed < 2.0, f"cut off after {elapsed:.1f} s"


def test_a_redirect_chain_shares_one_deadline(server):
    server.add_slow("/slow.png", bytes(600), delay_per_chunk=0.1, chunk_size=100)
    server.add_redirect("/hop", "/slow.png")
    server.add_raw("/slow-hop", b"HTTP/1.1 302 Found\r\nLocation: /hop\r\nConnection: close\r\n", then=b"X-A: b\r\n", every=0.1, for_seconds=0.4)
    # Either hop alone fits in 0.8 s; together they do not.
    started = time.monotonic()
    error = error_of(server.url("/slow-hop"), timeout=0.8)
    assert error.code == "image_download_failed" and "0.8 s" in error.message
    assert time.monotonic() - started < 1.8


def test_a_slow_dns_lookup_is_bounded_by_the_deadline(monkeypatch):
    def slow_lookup(*args, **kwargs):
        time.sleep(3)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    started = time.monotonic()
    error = error_of(f"http://{NAME}/cat.png", timeout=0.5)
    assert error.code == "image_download_failed" and "0.5 s timeout" in error.message
    assert time.monotonic() - started < 1.5


# --- server-side request forgery guard --------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/cat.png",
        "http://localhost/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/cat.png",
        "http://[::ffff:127.0.0.1]/cat.png",
        "http://10.1.2.3/cat.png",
        "http://192.168.0.1/cat.png",
        "http://0.0.0.0/cat.png",
        "http://127.1/cat.png",
        "http://2130706433/cat.png",
        "http://0x7f.0.0.1/cat.png",
        "https://[fe80::1]/cat.png",
    ],
)
def test_private_addresses_are_forbidden(url):
    error = error_of(url, allow_private=False, timeout=0.5)
    assert error.code == "image_url_forbidden"
    assert "Traceback" not in error.message


def test_forbidden_url_is_never_requested(server):
    server.add("/cat.png", b"image")
    error = error_of(server.url("/cat.png"), allow_private=False)
    assert error.code == "image_url_forbidden" and "127.0.0.1" in error.message
    assert server.hits["/cat.png"] == 0


def test_redirect_to_a_private_address_is_forbidden(server, loopback_is_public):
    server.add("/cat.png", b"image")
    server.add_redirect("/metadata", "http://169.254.169.254/latest/meta-data/")
    assert download(server.url("/cat.png"), allow_private=False) == b"image"
    error = error_of(server.url("/metadata"), allow_private=False, timeout=0.5)
    assert error.code == "image_url_forbidden" and "169.254.169.254" in error.message


@pytest.mark.parametrize(
    "address, forbidden",
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("100.64.0.1", True),  # carrier-grade NAT
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("172.16.5.4", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("::", True),
    ],
)
def test_address_rule(address, forbidden):
    assert fetch_address._is_forbidden(ipaddress.ip_address(address)) is forbidden


def test_the_parser_differential_url_is_refused_and_never_fetched(server, resolver, monkeypatch):
    """urlsplit reads the host as images.example.test, HTTP libraries connect to 127.0.0.1.

    The name "resolves" to a public-looking address that is only ever checked,
    never connected to: a guard that checked one host and connected to the
    other would fetch the loopback server's /admin/x.png.
    """
    real_rule = fetch_address._is_forbidden
    monkeypatch.setattr(fetch_address, "_is_forbidden", lambda ip: str(ip) != PUBLIC and real_rule(ip))
    resolver[NAME] = [PUBLIC]
    server.add("/admin/x.png", b"secret")
    for allow_private in (False, True):
        error = error_of(f"http://127.0.0.1:{server.port}\\@{NAME}/../admin/x.png", allow_private=allow_private)
        assert error.code == "invalid_request" and "backslash" in error.message
    assert server.hits["/admin/x.png"] == 0
    assert resolver.lookups == []


def test_the_host_resolved_once_is_the_host_connected_to(server, resolver, loopback_is_public):
    resolver[NAME] = ["127.0.0.1"]
    server.add("/cat.png", b"image")
    assert download(server.url("/cat.png", host=NAME), allow_private=False) == b"image"
    assert resolver.lookups == [NAME]
    assert server.host_headers["/cat.png"] == [f"{NAME}:{server.port}"]


def test_a_host_written_as_an_address_is_connected_to_without_a_lookup(server, resolver):
    server.add("/cat.png", b"image")
    assert download(server.url("/cat.png")) == b"image"
    assert resolver.lookups == []  # no resolver thread either: the address is the answer


@pytest.mark.parametrize("host", ["127.0.0.1", "198.51.100.7", "::1", "2001:db8::7", "::ffff:127.0.0.1"])
def test_an_address_resolves_to_what_the_resolver_gives_for_it(host):
    target = fetch_url.Target.parse(f"http://{'[' + host + ']' if ':' in host else host}:8080/x.png", redirected=False)
    expected = [(family, address) for family, _, _, _, address in socket.getaddrinfo(host, 8080, type=socket.SOCK_STREAM)]
    assert fetch_address.resolve(target, time.monotonic() + 5, 5) == expected


BAD_URLS = {
    "backslash in the path": "http://example.com/a\\b.png",
    "backslash before @": "http://example.com\\@127.0.0.1/x.png",
    "space in the host": "http://exa mple.com/x.png",
    "space in the path": "http://example.com/x y.png",
    "leading space": " http://example.com/x.png",
    "tab in the host": "http://exam\tple.com/x.png",
    "newline at the end": "http://example.com/x.png\n",
    "NUL in the host": "http://example.com\x00.evil.test/x.png",
    "C1 control": "http://example.com/\x85x.png",
    "ideographic space": "http://example.com\u3000/x.png",
    "user": "http://user@example.com/x.png",
    "user and password": "http://user:secret@example.com/x.png",
    "host:port as user": "http://127.0.0.1:80@example.com/x.png",
    "empty user": "http://@example.com/x.png",
    "percent-encoded host": "http://%31%32%37.0.0.1/x.png",
    "percent-encoded port": "http://example.com:%38%30/x.png",
    "IPv6 zone": "http://[fe80::1%25lo]/x.png",
    "no host": "http:///x.png",
    "port out of range": "http://example.com:99999/x.png",
    "signed port": "http://example.com:+80/x.png",
    "open bracket": "http://[::1/x.png",
}


def test_the_character_check_is_one_search_not_a_python_loop():
    """A URL of MAX_MESSAGE_BYTES, or a Location line of 64 KiB, was a turn of Python per character (32 ms)."""
    url = "http://example.com/" + "a" * 1_000_000
    started = time.thread_time()
    fetch_url.check_characters(url, redirected=False)
    assert time.thread_time() - started < 0.1
    # It refuses exactly what str.isspace() and the category Cc (control) name: all are below U+3001.
    refused = {chr(code) for code in range(0x3001) if fetch_url._SPACE_OR_CONTROL.search(chr(code))}
    assert refused == {chr(code) for code in range(0x3001) if chr(code).isspace() or unicodedata.category(chr(code)) == "Cc"}


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_urls_that_parsers_read_differently_are_refused_before_any_lookup(resolver, url):
    for allow_private in (False, True):
        error = error_of(url, allow_private=allow_private)
        assert error.code == "invalid_request", error.message
        assert error.message.startswith("image_url ")
    assert resolver.lookups == []


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{port}\\@images.example.test/admin/x.png",
        "http://user@127.0.0.1:{port}/admin/x.png",
        "http://%31%32%37.0.0.1:{port}/admin/x.png",
        "/admin/x.png\t",
    ],
)
def test_every_redirect_hop_is_read_as_strictly(server, location):
    server.add("/admin/x.png", b"secret")
    server.add_redirect("/hop", location.format(port=server.port))
    error = error_of(server.url("/hop"))
    assert error.code == "image_download_failed" and "redirected to" in error.message
    assert server.hits["/admin/x.png"] == 0


# --- DNS rebinding, in a network namespace of its own -------------------------

REBINDING_CHECK = textwrap.dedent(
    f"""
    import json, socket
    from server import fetch, fetch_address
    from server.errors import ClientError
    from harness.http_server import ImageHTTPServer

    lookups = []

    def rebinding_resolver(host, port, *args, **kwargs):
        # A public answer the first time, loopback ever after.
        lookups.append(host)
        address = "{PUBLIC}" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    socket.getaddrinfo = rebinding_resolver
    real_rule = fetch_address._is_forbidden  # TEST-NET-2 is not global: count it as public here
    fetch_address._is_forbidden = lambda ip: str(ip) != "{PUBLIC}" and real_rule(ip)

    with ImageHTTPServer() as loopback, ImageHTTPServer("{PUBLIC}", loopback.port) as public:
        loopback.add("/cat.png", b"loopback")
        public.add("/cat.png", b"public")
        try:
            outcome = fetch.download(
                "http://{NAME}:%d/cat.png" % public.port, max_bytes=1000, timeout=5, allow_private=False
            ).decode()
        except ClientError as error:
            outcome = error.code + ": " + error.message
        print(json.dumps({{"outcome": outcome, "lookups": len(lookups),
                          "public_hits": public.hits["/cat.png"], "loopback_hits": loopback.hits["/cat.png"]}}))
    """
)


def _in_network_namespace(script: str) -> dict:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare(1) and ip(8) to make a network namespace")
    setup = f"ip link set lo up && ip addr add {PUBLIC}/32 dev lo && exec \"$0\" -c \"$1\""
    try:
        done = subprocess.run(
            ["unshare", "--net", "sh", "-c", setup, sys.executable, script],
            cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the check in the network namespace did not finish in 60 s")
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_dns_rebinding_connects_only_to_the_checked_address():
    result = _in_network_namespace(REBINDING_CHECK)
    assert result == {"outcome": "public", "lookups": 1, "public_hits": 1, "loopback_hits": 0}


# --- https: the name goes in SNI and Host, the certificate is checked against it


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for images.example.test, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl(1) to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={NAME}",
         "-addext", f"subjectAltName=DNS:{NAME}"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture
def https_server(certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    with ImageHTTPServer(tls=context) as running:
        running.sni_names = names
        yield running


@pytest.fixture
def trust_certificate(monkeypatch, certificate):
    monkeypatch.setattr(fetch, "_tls_context", lambda: ssl.create_default_context(cafile=str(certificate[0])))


def test_https_sends_the_name_in_sni_and_host_and_connects_to_the_checked_address(
    https_server, resolver, trust_certificate, loopback_is_public
):
    resolver[NAME] = ["127.0.0.1"]
    https_server.add("/cat.png", b"image")
    assert download(https_server.url("/cat.png", host=NAME), allow_private=False) == b"image"
    assert https_server.sni_names == [NAME]
    assert https_server.host_headers["/cat.png"] == [f"{NAME}:{https_server.port}"]
    assert resolver.lookups == [NAME]


def test_https_refuses_a_certificate_for_another_name(https_server, resolver, trust_certificate):
    resolver["other.example.test"] = ["127.0.0.1"]
    https_server.add("/cat.png", b"image")
    error = error_of(https_server.url("/cat.png", host="other.example.test"))
    assert error.code == "image_download_failed" and "certificate" in error.message
    assert https_server.hits["/cat.png"] == 0


def test_https_refuses_an_untrusted_certificate(https_server, resolver):
    resolver[NAME] = ["127.0.0.1"]
    https_server.add("/cat.png", b"image")
    error = error_of(https_server.url("/cat.png", host=NAME))
    assert error.code == "image_download_failed" and "certificate" in error.message
    assert https_server.hits["/cat.png"] == 0


def test_https_dripping_headers_is_cut_off_at_the_deadline(https_server, resolver, trust_certificate):
    resolver[NAME] = ["127.0.0.1"]
    https_server.add_raw("/drip.png", b"HTTP/1.1 200 OK\r\nX-Drip: ", then=b"a", every=0.05, for_seconds=10)
    started = time.monotonic()
    error = error_of(https_server.url("/drip.png", host=NAME), timeout=1.0)
    assert error.code == "image_download_failed" and "1 s timeout" in error.message, error.message
    assert time.monotonic() - started < 2.0
