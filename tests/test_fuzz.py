"""Fuzz the one-message protocol: thousands of generated requests to one real server.

Every message, however malformed, must get an answer: exactly one typed
`error` (a code from the README's table, followed by that code's close code),
or `queued`, `status`, `result` and a close 1000. A recv timeout catches a
server that hangs; a close without a close frame, or with no message before
it, is a silent drop. Where the README determines the answer, the test checks
the exact code too (non-JSON text is `invalid_json`, a binary frame is
`invalid_request`, a valid request on the local image gets a `result`, ...).

The run is 2,000 examples, or CAP_FUZZ_EXAMPLES of them when that is set.
Real parts only: the server runs in-process with the tiny real SAM, the
client is a real WebSocket client over a real socket, and the images come
from a real local HTTP server (one 24x16 PNG, so a valid request is quick).

The run once found three inputs answered `internal_error` (an integer beyond
float range in a box, JSON nested past the recursion limit, an integer literal
of over 4,300 digits); they are client errors now, pinned by the tests at the end.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import math
import os
import time
import urllib.request
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import image_files
from harness.client import exchange
from harness.ports import free_port
from harness.waiting import wait_for
from tests.conftest import ws_url

# The README's error table, code -> close code. Written out here rather than
# imported from server.protocol, so that the server is checked against the
# document, not against itself.
README_CODES = {
    "invalid_json": 1008,
    "invalid_request": 1008,
    "message_too_large": 1009,
    "image_url_forbidden": 1008,
    "image_download_failed": 1008,
    "image_too_large": 1009,
    "unsupported_image": 1008,
    "queue_full": 1013,
    "store_unavailable": 1013,
    "shutting_down": 1001,
    "job_timeout": 1011,
    "processing_failed": 1011,
    "internal_error": 1011,
    "image_unknown": 1008,
    "mask_unknown": 1008,
    "result_too_large": 1009,
}

EXAMPLES = int(os.environ.get("CAP_FUZZ_EXAMPLES") or 2000)
VALID_CAP = max(150, EXAMPLES // 12)  # requests that run the model; past it, they point at a 404
RECV_TIMEOUT = 20.0  # seconds per message: far above any answer, so only a hang trips it
MAX_BOXES = 64  # the default, which the fuzzed server keeps
MAX_MESSAGE_BYTES = 65536  # likewise
MAX_IMAGE_BYTES = 65536  # lowered from the default, so that the messages at the hard limit stay small
# Past it, the README promises a bare close 1009: 4x MAX_MESSAGE_BYTES, plus the
# longest data: URL of MAX_IMAGE_BYTES (its media type, and 4 base64 characters per 3 bytes).
HARD_LIMIT = 4 * MAX_MESSAGE_BYTES + len("data:image/webp;base64,") + 4 * math.ceil(MAX_IMAGE_BYTES / 3)
WIDTH, HEIGHT = 24, 16  # the one image valid requests use
DEEP = 500  # nesting beyond this may hit Python's recursion limit in json.loads (known bug)

REQUEST_KEYS = {"image_url", "boxes", "multimask"}
BOX_KEYS = ("x", "y", "width", "height")
DOWNLOAD_CODES = {"image_download_failed", "image_url_forbidden", "unsupported_image", "image_too_large"}
BARE_1009 = "bare close 1009"


@dataclasses.dataclass(frozen=True)
class Urls:
    tiny: str  # a 24x16 PNG
    aliases: tuple[str, ...]  # other spellings of it, its data: URL among them
    page: str  # an HTML page: unsupported_image
    failing: tuple[str, ...]  # 404, a query the server does not route, a closed port


def make_urls(image_server) -> Urls:
    image_server.add("/fuzz/tiny.png", image_files.png_rgb(WIDTH, HEIGHT))
    image_server.add("/fuzz/page.html", image_files.html_page(), content_type="text/html")
    tiny = image_server.url("/fuzz/tiny.png")
    return Urls(
        tiny=tiny,
        aliases=(
            tiny + "#fragment",
            tiny.replace("http://", "HTTP://"),
            "data:image/png;base64," + base64.b64encode(image_files.png_rgb(WIDTH, HEIGHT)).decode(),
        ),
        page=image_server.url("/fuzz/page.html"),
        failing=(
            image_server.url("/fuzz/missing.png"),
            tiny + "?query=1",  # routes match the query too: 404
            f"http://127.0.0.1:{free_port()}/fuzz/tiny.png",
        ),
    )


# --- the oracle: what the README says each message must get -----------------------------


@dataclasses.dataclass(frozen=True)
class Expectation:
    outcomes: frozenset[str]  # acceptable: error codes, "result", BARE_1009


def expect(*outcomes: str) -> Expectation:
    return Expectation(frozenset(outcomes))


INVALID = expect("invalid_request")


def url_outcome(url: object, urls: Urls) -> frozenset[str] | None:
    """None: not an http(s) or data: URL (invalid_request). "ok": the tiny image."""
    if not isinstance(url, str) or not url:
        return None
    if url == urls.tiny or url in urls.aliases:
        return frozenset({"ok"})
    if url[:5].lower() == "data:":
        # Some other data: URL: malformed, not a PNG/JPEG/WebP, too large, or an image after all.
        return frozenset({"invalid_request", "unsupported_image", "image_too_large", "ok"})
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if url == urls.page:
        return frozenset({"unsupported_image"})
    if url in urls.failing:
        return frozenset({"image_download_failed"})
    # Some other well-formed URL (say http://127.00.0.1:PORT/fuzz/tiny.png): whatever the
    # download gives, a refusal of the URL, or the tiny image after all.
    return frozenset(DOWNLOAD_CODES | {"invalid_request", "ok"})


def as_float(value: object) -> float | str:
    """A box value as the spec sees it: a float, "bad" (not a finite number) or "huge"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "bad"
    try:
        number = float(value)
    except OverflowError:
        return "huge"  # an integer beyond float range
    return number if math.isfinite(number) else "bad"


def expect_for_value(value: object, urls: Urls) -> Expectation:
    """What a message that parses to `value` (a JSON value) must get."""
    if not isinstance(value, dict) or set(value) - REQUEST_KEYS:
        return INVALID
    if "multimask" in value and not isinstance(value["multimask"], bool):
        return INVALID
    url = url_outcome(value.get("image_url"), urls)
    if url is None:
        return INVALID
    boxes = value.get("boxes")
    if not isinstance(boxes, list) or not 1 <= len(boxes) <= MAX_BOXES:
        return INVALID
    parsed, bad = [], False
    for box in boxes:
        if not isinstance(box, dict) or set(box) != set(BOX_KEYS):
            return expect("invalid_request")
        numbers = {key: as_float(box[key]) for key in BOX_KEYS}
        # 10**400 is no finite float: the server refuses it like NaN.
        if "bad" in numbers.values() or "huge" in numbers.values():
            bad = True
        else:
            if numbers["width"] <= 0 or numbers["height"] <= 0:
                bad = True
            parsed.append(numbers)
    if bad:
        return expect("invalid_request")
    if "ok" not in url:
        return Expectation(url)
    return Expectation(clip_outcome(parsed).outcomes | (url - {"ok"}))


def clip_outcome(boxes: list[dict[str, float]]) -> Expectation:
    """Boxes are clipped to the image; one with no area left inside it is invalid_request."""
    ambiguous = False
    for box in boxes:
        x0, x1 = max(box["x"], 0.0), min(box["x"] + box["width"], float(WIDTH))
        y0, y1 = max(box["y"], 0.0), min(box["y"] + box["height"], float(HEIGHT))
        tiny_box = min(box["width"], box["height"]) < 1e-6
        if x1 <= x0 or y1 <= y0:
            if not tiny_box:
                return INVALID
            ambiguous = True  # a box narrower than float rounding: outside or a sliver
        elif min(x1 - x0, y1 - y0) < 1e-6:
            ambiguous = True
    return expect("result", "invalid_request") if ambiguous else expect("result")


def expect_for_text(text: str, urls: Urls) -> Expectation:
    size = len(text.encode("utf-8"))
    if size > HARD_LIMIT:
        return expect(BARE_1009)
    if size > MAX_MESSAGE_BYTES:
        return expect("message_too_large")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return expect("invalid_json")
    except (RecursionError, ValueError):
        # Too deep for Python's json, or an integer literal over 4,300 digits:
        # not JSON this server can read, or JSON it must refuse. Either typed code fits.
        return expect("invalid_json", "invalid_request")
    return expect_for_value(value, urls)


# --- the generated messages ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    payload: str | bytes
    expected: Expectation
    value: object = None  # the request as a JSON value, when it may run the model

    def __repr__(self) -> str:
        more = f" ... ({len(self.payload)} in all)" if len(self.payload) > 400 else ""
        return f"Case({self.kind!r}, {self.payload[:400]!r}{more}, {set(self.expected.outcomes)})"


def dump(value: object, ascii_only: bool) -> str:
    """JSON text; NaN and Infinity as Python writes them; raw UTF-8 unless asked, or unless
    a lone surrogate (only writable as a \\uXXXX escape) is in it."""
    if not ascii_only:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


any_char = st.characters(codec=None, exclude_categories=())  # lone surrogates included
utf8_char = st.characters(codec="utf-8")
odd_strings = st.sampled_from(
    ["", " ", "\x00", "\ud800", "\udfff\ud800", "\ud83d\ude00", "😀", "\ufeff", "\u202e", "\u2028",
     "null", "NaN", "{}", "\\", '"', "http://", "a" * 300]
)
texts = st.text(any_char, max_size=30) | odd_strings
huge_ints = st.sampled_from([10**400, -(10**400), 2**1024, -(2**1024), 2**1024 - 1])
numbers = (
    st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -0.0, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 1e308, -1e308, 5e-324, 1e-300])
    | huge_ints
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(texts, kids, max_size=5), max_leaves=20
)


@st.composite
def urls_strategy(draw, urls: Urls):
    return draw(
        st.sampled_from(
            [urls.tiny, urls.tiny, urls.tiny, urls.page, *urls.aliases, *urls.failing,
             "ftp://127.0.0.1/a.png", "file:///etc/passwd", "data:image/png;base64,iVBOR", "data:text/plain,hi", "http://", "http:///a.png", "javascript:alert(1)",
             "http://127.0.0.1:99999/a.png", "http://[::1/a.png", "//127.0.0.1/a.png", "127.0.0.1/a.png", ""]
        )
        | texts
    )


def box_strategy(junk: bool):
    # Mostly boxes that touch the 24x16 image; some outside it, some with no area.
    coordinate = st.integers(-10, 20) | st.floats(-10, 20) | st.integers(-40, 60) | st.floats(-40, 60)
    size = st.integers(1, 40) | st.floats(0.5, 40) | st.integers(1, 40) | st.integers(-2, 80) | st.floats(-1, 80)
    if junk:
        coordinate = coordinate | numbers | scalars
        size = size | numbers | scalars
    return st.fixed_dictionaries({"x": coordinate, "y": coordinate, "width": size, "height": size})


@st.composite
def valid_requests(draw, urls: Urls):
    """Requests on the tiny image with random boxes: most get a result, some a box outside it."""
    boxes = draw(st.lists(box_strategy(junk=False), min_size=1, max_size=3))
    value = {"image_url": urls.tiny, "boxes": boxes}
    multimask = draw(st.none() | st.booleans())
    if multimask is not None:
        value["multimask"] = multimask
    return Case("valid-looking", dump(value, draw(st.booleans())), expect_for_value(value, urls), value)


@st.composite
def wrong_types(draw, urls: Urls):
    """The right keys, with values of any type: junk URLs, junk boxes, junk multimask."""
    image_url = draw(urls_strategy(urls) | json_values)
    boxes = draw(
        st.lists(box_strategy(junk=True), min_size=0, max_size=3)
        | st.lists(box_strategy(junk=False), min_size=MAX_BOXES, max_size=MAX_BOXES + 1)
        | st.lists(json_values, max_size=3)
        | json_values
    )
    value = {"image_url": image_url, "boxes": boxes}
    multimask = draw(st.sampled_from(["absent", "junk", "bool"]))
    if multimask == "junk":
        value["multimask"] = draw(json_values)
    elif multimask == "bool":
        value["multimask"] = draw(st.booleans())
    if draw(st.booleans()):
        value = {key: value[key] for key in draw(st.permutations(list(value)))}
    if draw(st.integers(0, 9)) == 0:
        value[draw(texts)] = draw(json_values)  # maybe an unknown key, maybe an override
    return Case("wrong-types", dump(value, draw(st.booleans())), expect_for_value(value, urls), value)


@st.composite
def literal_tokens(draw, urls: Urls):
    """A request with NaN, Infinity, 1e999, a 400-digit integer ... written as raw JSON text."""
    token = draw(
        st.sampled_from(
            ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "-" + "9" * 400, "1" + "0" * 5000,
             "1e-400", "-0", "0.0", "1E2", "true", "null", '"5"', "[]", "{}", "01", "+1", ".5", "0x10"]
        )
    )
    value = {"image_url": urls.tiny, "boxes": [{"x": 2, "y": 2, "width": 8, "height": 8}], "multimask": False}
    where = draw(st.sampled_from(["x", "y", "width", "height", "multimask", "image_url", "boxes", "top"]))
    if where in BOX_KEYS:
        value["boxes"][0][where] = "@TOKEN@"
    elif where == "top":
        value = "@TOKEN@"
    else:
        value[where] = "@TOKEN@"
    text = json.dumps(value).replace('"@TOKEN@"', token)
    expected = expect_for_text(text, urls)
    if token.lstrip("-") in ("NaN", "Infinity"):
        # Not JSON by RFC 8259, though Python reads it: either refusal is right.
        expected = Expectation(expected.outcomes | {"invalid_json"})
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return Case("literal-token", text, expected, parsed)


@st.composite
def deeply_nested(draw, urls: Urls):
    depth = draw(st.integers(1, 20) | st.integers(1, 3000))
    shape = draw(st.sampled_from(["array", "object", "mixed", "unclosed", "in-boxes", "in-url"]))
    if shape == "array":
        text = "[" * depth + "]" * depth
    elif shape == "object":
        text = '{"a":' * depth + "1" + "}" * depth
    elif shape == "mixed":
        text = '[{"b":' * depth + "null" + "}]" * depth
    elif shape == "unclosed":
        text = "[" * depth
    elif shape == "in-boxes":
        text = json.dumps({"image_url": urls.tiny, "boxes": "@"}).replace('"@"', "[" * depth + "]" * depth)
    else:
        text = json.dumps({"image_url": "@", "boxes": [{"x": 1, "y": 1, "width": 1, "height": 1}]})
        text = text.replace('"@"', '{"u":' * depth + '"x"' + "}" * depth)
    expected = expect_for_text(text, urls)
    if depth > DEEP:
        expected = Expectation(expected.outcomes | {"invalid_json", "invalid_request"})
    return Case(f"nested-{shape}", text, expected)


@st.composite
def mutated_requests(draw, urls: Urls):
    """A valid request's JSON text, cut, spliced, prefixed or suffixed."""
    value = {"image_url": urls.tiny, "boxes": [{"x": 1, "y": 2, "width": 10, "height": 9}]}
    text = json.dumps(value)
    how = draw(st.sampled_from(["cut", "insert", "delete", "prefix", "suffix", "duplicate-key"]))
    where = draw(st.integers(0, len(text)))
    piece = draw(st.text(utf8_char, min_size=1, max_size=5))
    # Leave the scheme, host and port alone, so that no mutation sends the server to DNS
    # for a made-up name: edits there land after them, in the path.
    netloc_start, netloc_end = text.index("http://"), text.index("/fuzz/")
    if how == "insert" and netloc_start <= where <= netloc_end:
        where = netloc_end + 1
    if how == "delete" and where < netloc_end and where + len(piece) > netloc_start:
        where = netloc_end + 1
    if how == "cut":
        text = text[:where]
    elif how == "insert":
        text = text[:where] + piece + text[where:]
    elif how == "delete":
        text = text[:where] + text[where + len(piece):]
    elif how == "prefix":
        text = draw(st.sampled_from(["\ufeff", " \n\t", "x", "[", "//", piece])) + text
    elif how == "suffix":
        text = text + draw(st.sampled_from([" ", "\n", "x", "}", ",", "{}", piece]))
    else:
        text = text[:-1] + ', "image_url": ' + dump(draw(urls_strategy(urls)), True) + "}"
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return Case(f"mutated-{how}", text, expect_for_text(text, urls), parsed)


def random_text(urls: Urls):
    return st.text(utf8_char, max_size=200).map(lambda t: Case("text", t, expect_for_text(t, urls)))


def random_json(urls: Urls):
    return st.tuples(json_values, st.booleans()).map(
        lambda vb: Case("json-value", dump(vb[0], vb[1]), expect_for_text(dump(vb[0], vb[1]), urls))
    )


def binary_frames(urls: Urls):
    request = json.dumps({"image_url": urls.tiny, "boxes": [{"x": 1, "y": 1, "width": 5, "height": 5}]}).encode()
    return (st.binary(max_size=512) | st.sampled_from([b"", b"{}", request, b"\xff\xfe\x00"])).map(
        lambda data: Case("binary", data, INVALID)
    )


def empty_messages(urls: Urls):
    return st.sampled_from(["", " ", "\n", "{}", "[]", "null", '""', "0", "true", '{"boxes": []}']).map(
        lambda t: Case("empty-ish", t, expect_for_text(t, urls))
    )


def oversized(urls: Urls):
    """Around MAX_MESSAGE_BYTES (a typed message_too_large past it) and HARD_LIMIT (a bare 1009)."""
    sizes = [MAX_MESSAGE_BYTES - 1, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1, HARD_LIMIT, HARD_LIMIT + 1]

    def build(size_and_fill):
        size, fill = size_and_fill
        head = '{"image_url": "' + urls.tiny + '", "boxes": [], "pad": "'
        text = head + fill * (size - len(head) - 2) + '"}'
        return Case(f"size-{size}", text, expect_for_text(text, urls))

    return st.tuples(st.sampled_from(sizes), st.sampled_from(["a", " "])).map(build)


def messages(urls: Urls):
    return st.one_of(
        valid_requests(urls),
        wrong_types(urls),
        literal_tokens(urls),
        deeply_nested(urls),
        mutated_requests(urls),
        random_text(urls),
        random_json(urls),
        binary_frames(urls),
        empty_messages(urls),
        oversized(urls),
    )


# --- running a message --------------------------------------------------------------


def outcome_of(url: str, payload: str | bytes) -> tuple[str, object]:
    """Send one message on a new connection; the outcome's label, after checking its form."""
    got = exchange(url, payload, timeout=RECV_TIMEOUT)  # a hang raises TimeoutError
    if not got.messages:
        assert got.close_code is not None, "the server dropped the connection without a close frame"
        return f"bare close {got.close_code}", got
    if got.types[-1] == "result":
        assert got.types == ["queued", "status", "result"], got.messages
        assert got.close_code == 1000, got.close_code
        assert len({m["id"] for m in got.messages}) == 1
        return "result", got
    assert got.types == ["error"], f"expected exactly one error message: {got.messages}"
    error = got.last
    assert set(error) == {"type", "id", "code", "message"}, error
    assert error["code"] in README_CODES, error
    assert got.close_code == README_CODES[error["code"]], (error, got.close_code)
    assert error["id"] is None, error  # every fuzzed refusal comes before the record is stored
    assert isinstance(error["message"], str) and error["message"], error
    return error["code"], got


def check_result(value: dict, got) -> None:
    result = got.last
    assert result["image"] == {"width": WIDTH, "height": HEIGHT}
    assert len(result["masks"]) == len(value["boxes"])
    for answer in result["masks"]:
        if value.get("multimask"):
            assert isinstance(answer, list) and len(answer) == 3
        else:
            assert isinstance(answer, dict) and answer["segmentation"]["size"] == [HEIGHT, WIDTH]


def http_get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read()


@pytest.mark.slow  # about 20 s
def test_fuzzed_messages_each_get_one_typed_answer(start_app, image_server):
    app = start_app(max_image_bytes=MAX_IMAGE_BYTES)  # one server for the whole run
    url = ws_url(app)
    urls = make_urls(image_server)
    counts: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    capped = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
            HealthCheck.filter_too_much, HealthCheck.large_base_example,
        ],
    )
    @given(case=messages(urls))
    def one_message(case: Case) -> None:
        nonlocal capped
        if "result" in case.expected.outcomes and counts["result"] >= VALID_CAP:
            # Enough model runs: the same request on an image that is not there.
            capped += 1
            value = dict(case.value, image_url=urls.failing[0])
            case = Case(case.kind + " (capped)", dump(value, True), expect_for_value(value, urls), value)
        label, got = outcome_of(url, case.payload)
        counts[label] += 1
        kinds[case.kind.split(" ")[0]] += 1
        assert label in case.expected.outcomes, f"{case!r} got {label}: {got.messages}"
        if label == "result":
            check_result(case.value, got)

    started = time.perf_counter()
    one_message()
    elapsed = time.perf_counter() - started
    sent = sum(counts.values())

    # After the storm: a normal request still succeeds, /ping answers, nothing is left over.
    after = exchange(url, {"image_url": urls.tiny, "boxes": [{"x": 2, "y": 2, "width": 10, "height": 8}]})
    assert after.types == ["queued", "status", "result"] and after.close_code == 1000
    assert http_get(app.port, "/ping") == (200, b"pong")
    assert wait_for(lambda: json.loads(http_get(app.port, "/health")[1])["connections"] == 0, 10)
    records = list(app.store.records())
    assert len(records) == counts["result"] + 1 and all(r["status"] == "finished" for r in records)

    errors = sum(n for label, n in counts.items() if label in README_CODES)
    print(
        f"\nfuzz: {sent} messages in {elapsed:.1f} s ({sent / elapsed:.0f}/s): {counts['result']} results, "
        f"{errors} typed errors, {counts[BARE_1009]} bare 1009 closes (over HARD_LIMIT), "
        f"0 hangs, 0 silent drops; {capped} valid requests redirected past the cap of {VALID_CAP}"
        f"\n  by outcome: {dict(counts.most_common())}"
        f"\n  by kind: {dict(kinds.most_common())}"
    )
    assert sent >= EXAMPLES


# --- inputs that once gave internal_error -------------------------------------------------
# The fuzz run found these: each was answered internal_error (1011) with a logged
# traceback. They are client errors, refused as invalid_request/invalid_json.


def test_an_integer_beyond_float_range_in_a_box_is_invalid_request(start_app, image_server):
    app = start_app()
    text = '{"image_url": "%s", "boxes": [{"x": 1%s, "y": 1, "width": 5, "height": 5}]}' % (
        image_server.url("/rgb.png"), "0" * 400,
    )
    got = exchange(ws_url(app), text, timeout=RECV_TIMEOUT)
    print(f"\n10**400 as box x: {got.messages}, close {got.close_code}")
    assert got.types == ["error"] and got.last["code"] == "invalid_request" and got.close_code == 1008


def test_json_nested_past_the_recursion_limit_is_invalid_json(start_app):
    app = start_app()
    got = exchange(ws_url(app), "[" * 5000 + "]" * 5000, timeout=RECV_TIMEOUT)
    print(f"\n5,000 nested arrays: {got.messages}, close {got.close_code}")
    assert got.types == ["error"] and got.close_code == 1008
    assert got.last["code"] in ("invalid_json", "invalid_request")


def test_an_integer_literal_over_4300_digits_is_refused_as_a_client_error(start_app):
    app = start_app()
    got = exchange(ws_url(app), "1" + "0" * 5000, timeout=RECV_TIMEOUT)
    print(f"\n5,001-digit integer: {got.messages}, close {got.close_code}")
    assert got.types == ["error"] and got.close_code == 1008
    assert got.last["code"] in ("invalid_json", "invalid_request")
