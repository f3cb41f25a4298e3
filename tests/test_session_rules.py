"""Every rule of docs/protocol.md#sessions, without a socket: server.session_rules alone."""

from __future__ import annotations

import json

import pytest

from server.errors import ClientError
from server.session_rules import CONNECTION_ERRORS, NOT_A_SESSION, Answer, Close, Limits, Serve, SessionRules, Supersede

LIMITS = Limits(
    request_timeout=10, session_idle_seconds=300, max_message_bytes=65536, max_image_bytes=1 << 20,
    max_boxes=64, max_points=64,
)
URL = "http://images.test/cat.png"


def request(keep_open=None, **extra) -> str:
    body = {"image_url": URL, "prompts": [{"box": {"x": 1, "y": 1, "width": 5, "height": 5}}], **extra}
    if keep_open is not None:
        body["keep_open"] = keep_open
    return json.dumps(body)


def new(now=0.0) -> SessionRules:
    return SessionRules(LIMITS, now)


def test_a_request_is_served_then_answered_and_closed_1000():
    rules = new()
    [serve] = rules.message(request(), now=1)
    assert isinstance(serve, Serve) and serve.request.image_url == URL
    assert rules.waiting and rules.deadline is None
    assert rules.answered(now=2) == [Close(1000)]
    assert rules.closed


def test_silence_before_the_first_request_is_invalid_request_then_its_close():
    rules = new(now=0)
    assert rules.tick(now=9.9) == []
    actions = rules.tick(now=10)
    assert actions[0] == Answer("invalid_request", "No request arrived within 10 s.")
    assert actions[1] == Close(1008, "invalid_request")
    assert rules.closed


def test_keep_open_makes_a_session_that_stays_open_after_its_answer():
    rules = new()
    rules.message(request(keep_open=True), now=1)
    assert rules.session
    assert rules.answered(now=2) == []
    assert not rules.closed and rules.deadline == 2 + LIMITS.session_idle_seconds


def test_a_request_without_keep_open_in_a_session_closes_after_its_answer():
    rules = new()
    rules.message(request(keep_open=True), now=1)
    rules.answered(now=2)
    rules.message(request(keep_open=False), now=3)
    assert rules.answered(now=4) == [Close(1000)]


def test_a_second_message_while_waiting_without_a_session_is_invalid_request_then_a_close():
    rules = new()
    rules.message(request(), now=1)
    actions = rules.message(request(), now=2)
    assert actions[0] == Answer("invalid_request", NOT_A_SESSION)
    assert isinstance(actions[1], Close) and rules.closed


def test_in_a_session_a_message_while_waiting_supersedes_the_waiting_request():
    rules = new()
    rules.message(request(keep_open=True, client_ref="a"), now=1)
    actions = rules.message(request(keep_open=True, client_ref="b"), now=2)
    assert actions[0] == Supersede(client_ref="a")
    assert isinstance(actions[1], Serve) and actions[1].request.client_ref == "b"
    assert rules.waiting and rules.client_ref == "b"


def test_in_a_session_an_error_answers_one_request_and_the_session_goes_on():
    rules = new()
    rules.message(request(keep_open=True), now=1)
    rules.answered(now=2)
    bad = json.dumps({"image_url": URL, "prompts": [{"box": {"x": 1}}], "keep_open": True})
    [answer] = rules.message(bad, now=3)
    assert isinstance(answer, Answer) and answer.code == "invalid_request"
    assert not rules.closed and not rules.waiting


@pytest.mark.parametrize("message", ["{not json", json.dumps({"image_url": URL, "keep_open": "yes"})])
def test_in_a_session_an_unreadable_message_answers_and_the_session_goes_on(message):
    rules = new()
    rules.message(request(keep_open=True), now=1)
    rules.answered(now=2)
    [answer] = rules.message(message, now=3)
    assert isinstance(answer, Answer) and not rules.closed


def test_in_a_session_a_refused_request_with_keep_open_false_answers_then_closes_1000():
    rules = new()
    rules.message(request(keep_open=True), now=1)
    rules.answered(now=2)
    rules.message(request(keep_open=False), now=3)
    actions = rules.refused(ClientError("unsupported_image", "That is no image."))
    assert actions == [Answer("unsupported_image", "That is no image."), Close(1000)]


@pytest.mark.parametrize("code", sorted(CONNECTION_ERRORS))
def test_connection_errors_end_a_session_with_their_close_code(code):
    rules = new()
    rules.message(request(keep_open=True), now=1)
    actions = rules.refused(ClientError(code, "gone"))
    assert actions[0] == Answer(code, "gone")
    assert isinstance(actions[1], Close) and actions[1].code != 1000 and actions[1].reason == code
    assert rules.closed


def test_an_error_without_a_session_answers_then_closes_with_its_code():
    rules = new()
    rules.message(request(), now=1)
    actions = rules.failed(ClientError("processing_failed", "The model failed."), now=2)
    assert actions[0] == Answer("processing_failed", "The model failed.")
    assert isinstance(actions[1], Close) and actions[1].reason == "processing_failed"


def test_a_session_closes_idle_after_its_last_admitted_request_ended():
    rules = new()
    rules.message(request(keep_open=True), now=1)
    rules.failed(ClientError("processing_failed", "The model failed."), now=50)  # an admitted request: activity
    assert rules.tick(now=349) == []
    assert rules.tick(now=350) == [Close(1000, "idle")]
    assert rules.closed


def test_refused_messages_do_not_reset_the_idle_clock():
    rules = new()
    rules.message(request(keep_open=True), now=1)
    rules.answered(now=2)
    for now in range(10, 300, 10):
        rules.message("{not json", now=now)  # each gets an error answer, and is no activity
    assert rules.tick(now=302) == [Close(1000, "idle")]


def test_no_idle_close_while_a_request_waits():
    rules = new()
    rules.message(request(keep_open=True), now=1)
    rules.answered(now=2)
    rules.message(request(keep_open=True), now=3)
    assert rules.tick(now=10_000) == [] and not rules.closed


def test_the_client_ref_of_each_request_is_kept_for_its_answers():
    rules = new()
    rules.message(request(keep_open=True, client_ref="first"), now=1)
    assert rules.client_ref == "first"
    [answer] = rules.failed(ClientError("processing_failed", "The model failed."), now=2)
    assert answer.client_ref == "first"
    [answer] = rules.message(json.dumps({"prompts": [], "keep_open": True, "client_ref": "second"}), now=3)
    assert answer.code == "invalid_request" and answer.client_ref == "second"
    rules.message("{not json", now=4)
    assert rules.client_ref is None
