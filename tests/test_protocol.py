"""Request validation and message building: every error code this layer owns."""

import base64
import json
import time

import pytest

from server import answers, errors, message_size, protocol
from server.errors import ClientError
from server.prompts import Point
from server.protocol import Request, fit_prompts, parse_request
from server.request_prompts import Box, MaskRef, RequestPrompt

LIMITS = {"max_boxes": 4, "max_points": 3, "max_message_bytes": 1024, "max_image_bytes": 3000}
GOOD = {"image_url": "https://example.com/cat.jpg", "boxes": [{"x": 10, "y": 20, "width": 200, "height": 150}]}


def parse(body, **limits):
    text = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return parse_request(text, **{**LIMITS, **limits})


def refused(body, **limits) -> ClientError:
    with pytest.raises(ClientError) as caught:
        parse(body, **limits)
    assert caught.value.message.strip(), "an error must carry a sentence"
    return caught.value


def test_a_good_request_parses():
    request = parse({**GOOD, "multimask": True})
    assert request.image_url == GOOD["image_url"]
    assert request.prompts == (RequestPrompt(box=Box(10.0, 20.0, 200.0, 150.0)),) and request.boxes_form
    assert request.multimask is True
    assert parse(GOOD).multimask is False


@pytest.mark.parametrize("text", ["{", "not json", "", '{"image_url": }'])
def test_invalid_json(text):
    assert refused(text).code == "invalid_json"


@pytest.mark.parametrize(
    "body, words",
    [
        ([], "JSON object"),
        ({**GOOD, "box": []}, "'box'"),  # a typo is caught, and named
        ({"boxes": GOOD["boxes"]}, "image_url"),
        ({**GOOD, "image_url": "ftp://example.com/a.png"}, "http, https or data"),
        ({**GOOD, "image_url": "file:///etc/passwd"}, "http, https or data"),
        ({**GOOD, "image_url": "https:///nohost.png"}, "no host"),
        ({**GOOD, "image_url": "http://example.com:99999/a.png"}, "not a valid URL"),
        ({**GOOD, "image_url": 7}, "image_url"),
        ({**GOOD, "boxes": []}, "non-empty"),
        ({**GOOD, "boxes": "10,20,30,40"}, "non-empty list"),
        ({**GOOD, "boxes": [{"x": 0, "y": 0, "width": 1}]}, "exactly the keys"),
        ({**GOOD, "boxes": [{"x": 0, "y": 0, "width": 1, "height": 1, "z": 1}]}, "exactly the keys"),
        ({**GOOD, "boxes": [{"x": "0", "y": 0, "width": 1, "height": 1}]}, "finite number"),
        ({**GOOD, "boxes": [{"x": True, "y": 0, "width": 1, "height": 1}]}, "finite number"),
        ({**GOOD, "boxes": [{"x": 0, "y": 0, "width": 0, "height": 1}]}, "greater than 0"),
        ({**GOOD, "boxes": [{"x": 0, "y": 0, "width": 5, "height": -1}]}, "greater than 0"),
        ({**GOOD, "boxes": [GOOD["boxes"][0]] * 5}, "limit is 4"),
        ({**GOOD, "multimask": "yes"}, "multimask"),
    ],
)
def test_invalid_request(body, words):
    error = refused(body)
    assert error.code == "invalid_request"
    assert words in error.message


def test_non_finite_numbers_are_refused():
    text = json.dumps(GOOD).replace("10", "NaN", 1)
    assert refused(text).code == "invalid_request"


def test_binary_frame_is_invalid_request():
    assert refused(json.dumps(GOOD).encode()).code == "invalid_request"


def test_message_too_large_counts_utf8_bytes():
    body = {**GOOD, "image_url": "https://example.com/" + "é" * 500}  # 500 characters, 1000 bytes
    assert len(json.dumps(body, ensure_ascii=False)) < 1024 < len(json.dumps(body, ensure_ascii=False).encode())
    error = refused(json.dumps(body, ensure_ascii=False))
    assert error.code == "message_too_large"
    assert "1024" in error.message


# --- data: URLs: MAX_MESSAGE_BYTES does not count them; MAX_IMAGE_BYTES bounds them ---------


def data_url(image_bytes: int) -> str:
    """A data: URL of exactly `image_bytes` bytes (not an image: this layer does not look)."""
    return "data:image/webp;base64," + base64.b64encode(b"\0" * image_bytes).decode()


def test_a_data_url_may_take_the_message_past_max_message_bytes():
    body = {**GOOD, "image_url": data_url(3000)}  # 4,000 characters of base64
    assert len(json.dumps(body)) > 4000
    assert parse(body).image_url == body["image_url"]


def test_the_message_limit_is_max_message_bytes_plus_the_longest_data_url():
    assert message_size.message_limit(1024, 3000) == 1024 + len("data:image/webp;base64,") + 4000
    assert message_size.message_limit(1024, 3001) == 1024 + len("data:image/webp;base64,") + 4004


def test_only_the_data_url_is_not_counted():
    url = data_url(30)
    text = json.dumps({**GOOD, "image_url": url}).replace(", ", "," + " " * 1100, 1)  # padding outside the URL
    assert len(text) - len(url) > 1024 and len(text) < message_size.message_limit(1024, 3000)
    error = refused(text)
    assert error.code == "message_too_large"
    assert "1024" in error.message and "data: URL" in error.message
    assert parse(text.replace(" " * 1100, " " * 900)).image_url == url  # just under: accepted


def test_a_message_past_the_whole_limit_is_refused_before_it_is_parsed():
    text = json.dumps({**GOOD, "image_url": data_url(3800)})  # 3000 image bytes plus 1024 do not hold it
    assert len(text) > message_size.message_limit(1024, 3000)
    assert refused(text).code == "message_too_large"
    assert refused("[" * 9000).code == "message_too_large"  # never parsed, so never a JSON error


def test_an_oversized_message_that_is_not_json_is_too_large_not_invalid_json():
    assert refused("x" * 2000).code == "message_too_large"
    assert refused("x" * 1000).code == "invalid_json"


def test_a_data_url_with_a_lone_surrogate_is_counted_then_refused_as_not_text():
    text = json.dumps({**GOOD, "image_url": "data:image/png;base64,\ud800" + "A" * 1100})
    assert "\\ud800" in text  # JSON escapes it: valid JSON, and not encodable as UTF-8 once parsed
    error = refused(text)  # past MAX_MESSAGE_BYTES only by the data: URL, so not message_too_large
    assert error.code == "invalid_request" and "image_url holds a lone surrogate" in error.message


# --- the hostile literal of issue 19: one linear pass, and only past MAX_MESSAGE_BYTES ----------


def hostile(repeats: int) -> str:
    """A string never closed, full of escaped `"data:` openings: quadratic for the old regex."""
    return '"data:' + '\\"data:' * repeats


def answered_within(seconds: float, text: str, **limits) -> ClientError:
    started = time.thread_time()  # this thread's CPU: others' load on the machine does not count
    error = refused(text, **limits)
    spent = time.thread_time() - started
    assert spent < seconds, f"answering {len(text):,} characters took {spent:.2f} s of CPU"
    return error


def test_the_reported_63_kb_message_is_not_scanned_at_all_under_max_message_bytes():
    text = hostile(9_000)  # froze the whole server 13 s: the scan ran before any size check
    assert len(text) < 65536
    error = answered_within(0.5, text, max_message_bytes=65536, max_image_bytes=20 * 2**20)
    assert error.code == "invalid_json"  # parsed at once, and refused for the string left open


def test_past_max_message_bytes_the_hostile_literal_is_measured_in_one_pass():
    text = hostile(8_000)  # 56 KB: the old regex took seconds on it, 4x as long for each doubling
    error = answered_within(0.5, text, max_message_bytes=1024, max_image_bytes=20 * 2**20)
    assert error.code == "message_too_large"  # a literal left open is no data: URL


@pytest.mark.parametrize(
    "body, where",
    [
        ({**GOOD, "image_url": "http://h/\ud800.png"}, "image_url"),  # the report's: internal_error before
        ({**GOOD, "client_ref": "ref-\udc00"}, "client_ref"),
        (
            {"image_sha256": "0" * 64, "prompts": [{"points": [{"x": 1, "y": 1, "label": 1}], "mask_input": {"id": "\udfff", "index": 0}}]},
            "prompts[0].mask_input.id",
        ),
    ],
)
def test_a_lone_surrogate_anywhere_is_invalid_request_that_names_where(body, where):
    error = refused(json.dumps(body))
    assert error.code == "invalid_request"
    assert error.message.startswith(f"{where} holds a lone surrogate")


def test_a_client_ref_that_is_not_text_is_not_echoed():
    assert protocol.client_ref_of({"client_ref": "ref-\ud800"}) is None
    assert protocol.client_ref_of({"client_ref": "ref-😀"}) == "ref-😀"


def test_a_data_url_is_never_echoed_in_an_error():
    error = refused({**GOOD, "image_url": data_url(30), "boxes": []})
    assert error.code == "invalid_request" and "data:" not in error.message


def boxes_request(*boxes: Box) -> Request:
    return Request(None, "0" * 64, tuple(RequestPrompt(box=box) for box in boxes), boxes_form=True)


def test_clip_keeps_inside_boxes_and_clips_overhangs():
    request = boxes_request(Box(10, 20, 30, 40), Box(-10, -5, 50, 50), Box(90, 60, 100, 100))
    assert [p.box for p in fit_prompts(request, 100, 80)] == [Box(10, 20, 30, 40), Box(0, 0, 40, 45), Box(90, 60, 10, 20)]


@pytest.mark.parametrize(
    "box", [Box(100, 0, 5, 5), Box(0, 80, 5, 5), Box(-10, 0, 10, 5), Box(200, 200, 5, 5), Box(-20, -20, 5, 5)]
)
def test_box_wholly_outside_is_an_error(box):
    with pytest.raises(ClientError) as caught:
        fit_prompts(boxes_request(Box(0, 0, 1, 1), box), 100, 80)
    assert caught.value.code == "invalid_request"
    assert "boxes[1]" in caught.value.message and "100x80" in caught.value.message


def test_box_to_xyxy():
    assert Box(10, 20, 30, 40).to_xyxy() == (10, 20, 40, 60)


def test_messages_are_typed_json():
    assert json.loads(answers.queued_message("j", 3)) == {"type": "queued", "id": "j", "position": 3}
    assert json.loads(answers.status_message("j", "processing")) == {
        "type": "status", "id": "j", "status": "processing"
    }
    error = json.loads(answers.error_message(None, "queue_full", "Try later."))
    assert error == {"type": "error", "id": None, "code": "queue_full", "message": "Try later."}
    result = json.loads(
        answers.result_message(
            answers.result_fields(
                "j", width=4, height=3, sha256="ab" * 32, masks=[], timings={"total_ms": 1.0}, cached_embedding=False
            )
        )
    )
    assert result["image"] == {"width": 4, "height": 3, "sha256": "ab" * 32} and result["type"] == "result"
    assert "client_ref" not in result
    v1 = answers.result_fields("j", width=4, height=3, sha256=None, masks=[], timings={}, cached_embedding=False)
    assert v1["image"] == {"width": 4, "height": 3}
    assert parse(GOOD).is_v1 and not parse({**GOOD, "client_ref": "x"}).is_v1 and not parse({**GOOD, "output": ["polygons"]}).is_v1
    tagged = [
        answers.queued_message("j", 1, "ref-7"),
        answers.status_message("j", "processing", "ref-7"),
        answers.error_message("j", "superseded", "Replaced.", "ref-7"),
    ]
    assert all(json.loads(message)["client_ref"] == "ref-7" for message in tagged)


def test_every_error_code_has_the_close_code_of_the_contract():
    expected = {
        "invalid_json": 1008, "invalid_request": 1008, "message_too_large": 1009,
        "image_url_forbidden": 1008, "image_download_failed": 1008, "image_too_large": 1009,
        "unsupported_image": 1008, "queue_full": 1013, "store_unavailable": 1013, "shutting_down": 1001,
        "processing_failed": 1011, "internal_error": 1011, "job_timeout": 1011,
        "image_unknown": 1008, "mask_unknown": 1008, "result_too_large": 1009, "superseded": None,
    }
    assert errors.CLOSE_CODES == expected


# --- protocol 1.1 ---------------------------------------------------------------------------

SHA = "0123456789abcdef" * 4
PROMPTS = {"image_sha256": SHA, "prompts": [
    {"box": {"x": 1, "y": 2, "width": 3, "height": 4}},
    {"points": [{"x": 5, "y": 6, "label": 1}, {"x": 7, "y": 8, "label": 0}]},
    {"box": {"x": 1, "y": 2, "width": 3, "height": 4}, "points": [{"x": 2, "y": 3, "label": 1}],
     "mask_input": {"id": "earlier", "index": 0, "candidate": 2}},
]}


def test_a_1_1_request_parses_into_typed_prompts():
    request = parse({**PROMPTS, "output": ["polygons", "rle"], "keep_open": True, "client_ref": "c1"})
    assert request.image_url is None and request.image_sha256 == SHA and not request.boxes_form
    assert request.prompts[0] == RequestPrompt(box=Box(1, 2, 3, 4))
    assert request.prompts[1].points == (Point(5, 6, 1), Point(7, 8, 0))
    assert request.prompts[2].mask_input == MaskRef("earlier", 0, 2)
    assert request.output == ("polygons", "rle") and request.keep_open and request.client_ref == "c1"
    assert parse({"image_sha256": SHA, "prompts": []}).prompts == ()  # prepares the image
    assert request.prompts[2].to_dict() == PROMPTS["prompts"][2]  # what a record keeps and a result echoes


@pytest.mark.parametrize(
    "body, words",
    [
        ({"image_sha256": SHA}, 'send "prompts": []'),
        ({**GOOD, "prompts": []}, "either boxes or prompts"),
        ({**PROMPTS, "image_url": GOOD["image_url"]}, "exactly one of image_url and image_sha256"),
        ({"prompts": []}, "exactly one of image_url and image_sha256"),
        ({"image_sha256": SHA.upper(), "prompts": []}, "64 lowercase"),
        ({"image_sha256": SHA, "prompts": [{}]}, "prompts[0] has neither a box nor a point"),
        ({"image_sha256": SHA, "prompts": [{"points": []}]}, "prompts[0] has neither a box nor a point"),
        ({"image_sha256": SHA, "prompts": [{"points": [{"x": 1, "y": 1, "label": 2}]}]}, "prompts[0].points[0].label"),
        ({"image_sha256": SHA, "prompts": [{"points": [{"x": 1, "y": 1, "label": True}]}]}, "prompts[0].points[0].label"),
        ({"image_sha256": SHA, "prompts": [{"points": [{"x": 1, "y": 1}]}]}, "exactly the keys x, y, label"),
        ({"image_sha256": SHA, "prompts": [{"points": [{"x": 1, "y": 1, "label": 1}] * 4}]}, "MAX_POINTS"),
        ({"image_sha256": SHA, "prompts": [{"box": {"x": 1}}]}, "prompts[0].box must be an object"),
        ({"image_sha256": SHA, "prompts": [{"box": {"x": 1, "y": 1, "width": 1, "height": 1}, "mask_input": {"id": "a"}}]},
         "prompts[0].mask_input must be"),
        ({"image_sha256": SHA, "prompts": [{"points": [{"x": 1, "y": 1, "label": 1}], "mask_input": {"id": "a", "index": -1}}]},
         "mask_input.index"),
        ({"image_sha256": SHA, "prompts": [{"points": [{"x": 1, "y": 1, "label": 1}], "colour": "red"}]}, "no other key"),
        ({"image_sha256": SHA, "prompts": [{"box": {"x": 0, "y": 0, "width": 1, "height": 1}}] * 5}, "limit is 4"),
        ({"image_sha256": SHA, "prompts": [], "output": []}, "output must be"),
        ({"image_sha256": SHA, "prompts": [], "output": ["png"]}, "output must be"),
        ({"image_sha256": SHA, "prompts": [], "keep_open": "yes"}, "keep_open must be"),
        ({"image_sha256": SHA, "prompts": [], "client_ref": "x" * 129}, "client_ref"),
    ],
)
def test_each_malformed_1_1_request_says_which_prompt_and_what(body, words):
    error = refused(body)
    assert error.code == "invalid_request" and words in error.message, error.message


def test_points_must_lie_within_the_image_and_boxes_are_clipped():
    request = parse({"image_sha256": SHA, "prompts": [
        {"box": {"x": -5, "y": 0, "width": 20, "height": 10}, "points": [{"x": 100, "y": 80, "label": 1}]},
    ]})
    fitted = fit_prompts(request, 100, 80)
    assert fitted[0].box == Box(0, 0, 15, 10) and fitted[0].points == (Point(100, 80, 1),)  # the edge is inside
    outside = parse({"image_sha256": SHA, "prompts": [{"points": [{"x": 0, "y": 0, "label": 1}, {"x": 100.5, "y": 3, "label": 0}]}]})
    with pytest.raises(ClientError) as caught:
        fit_prompts(outside, 100, 80)
    assert caught.value.code == "invalid_request" and "prompts[0].points[1]" in caught.value.message


def test_client_ref_and_keep_open_are_read_even_from_a_refused_request():
    body = {"client_ref": "r1", "keep_open": True, "boxes": "nonsense"}
    assert protocol.client_ref_of(body) == "r1" and protocol.keep_open_of(body)
    assert protocol.client_ref_of({"client_ref": 5}) is None and not protocol.keep_open_of({"keep_open": "yes"})
