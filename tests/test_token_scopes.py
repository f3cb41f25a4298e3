"""Two API tokens over real sockets: one token sees nothing of another's, and cannot flush its caches.

With `API_TOKEN=token-a,token-b`, client A's image hashes and result ids are
A's: client B's requests by A's hash, or refining A's mask, hear the very
words an unknown hash or id gets, with nothing of A's URL in them; and B's
many images and results leave A's embedding and masks in the caches
(docs/protocol.md, "The token").
"""

from __future__ import annotations

import base64
import hashlib
import uuid

from harness import image_files
from harness.client import exchange, session as open_session
from tests.conftest import ws_url

TOKENS = "token-a,token-b"
PNG = image_files.png_rgb(52, 36)
SHA = hashlib.sha256(PNG).hexdigest()
POINT = [{"x": 20, "y": 15, "label": 1}]


def as_client(app, token: str) -> str:
    return ws_url(app) + f"?token={token}"


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def refusal(outcome, named: str, stand_in: str) -> tuple[str, str]:
    """An error's code and message, with what the request named put back to a stand-in, to compare words."""
    assert outcome.types == ["error"], outcome.messages
    return outcome.last["code"], outcome.last["message"].replace(named, stand_in)


def test_another_tokens_image_hash_gets_the_words_of_a_hash_no_one_sent(start_app, image_server):
    image_server.add("/scoped-a.png", PNG)
    app = start_app(api_token=TOKENS)
    brought = exchange(as_client(app, "token-a"), {"image_url": image_server.url("/scoped-a.png"), "prompts": []})
    assert brought.last["type"] == "result" and brought.last["image"]["sha256"] == SHA

    unknown = refusal(exchange(as_client(app, "token-b"), {"image_sha256": "f" * 64, "prompts": []}), "f" * 12, "<h>")
    asked = exchange(as_client(app, "token-b"), {"image_sha256": SHA, "prompts": [{"points": POINT}]})
    assert unknown[0] == "image_unknown" and refusal(asked, SHA[:12], "<h>") == unknown  # not its size, masks or cache
    mine = exchange(as_client(app, "token-a"), {"image_sha256": SHA, "prompts": [{"points": POINT}]})
    assert mine.last["type"] == "result" and mine.last["cached_embedding"] is True
    # Once B brings the same image itself, it is B's too, with an embedding of B's own.
    assert exchange(as_client(app, "token-b"), {"image_url": data_url(PNG), "prompts": []}).last["cached_embedding"] is False
    assert exchange(as_client(app, "token-b"), {"image_sha256": SHA, "prompts": []}).last["type"] == "result"

    scopes = {record["scope"] for record in app.store.records()}
    assert len(scopes) == 2 and None not in scopes  # A's and B's, named by keyed hashes
    stored = b"".join(path.read_bytes() for path in app.settings.sqlite_path.parent.glob("cap.sqlite3*"))
    assert b"token-a" not in stored and b"token-b" not in stored


def test_an_image_that_cannot_be_fetched_again_is_unknown_without_its_url(start_app, image_server):
    image_server.add("/scoped-gone.png", PNG)
    app = start_app(api_token=TOKENS, embedding_cache_size=0)
    url = image_server.url("/scoped-gone.png")
    assert exchange(as_client(app, "token-a"), {"image_url": url, "prompts": []}).last["type"] == "result"
    for saved in [path for path in app.settings.image_dir.rglob("*") if path.is_file()]:
        saved.unlink()
    image_server.add("/scoped-gone.png", b"gone", content_type="text/plain", status=404)

    unknown = refusal(exchange(as_client(app, "token-b"), {"image_sha256": "f" * 64, "prompts": []}), "f" * 12, "<h>")
    theirs = exchange(as_client(app, "token-b"), {"image_sha256": SHA, "prompts": []})
    assert refusal(theirs, SHA[:12], "<h>") == unknown
    mine = exchange(as_client(app, "token-a"), {"image_sha256": SHA, "prompts": []})
    assert mine.last["code"] == "image_unknown" and "fetching it again" in mine.last["message"]
    for message in (theirs.last["message"], mine.last["message"]):
        assert "127.0.0.1" not in message and str(image_server.port) not in message, message


def test_another_tokens_result_cannot_be_refined_and_is_refused_like_an_unknown_id(start_app):
    app = start_app(api_token=TOKENS)
    with open_session(as_client(app, "token-a")) as a:
        made = a.ask({"image_url": data_url(PNG), "prompts": [{"points": POINT}]})
        assert made["type"] == "result"
        refined = a.ask({"image_sha256": SHA, "prompts": [{"points": POINT, "mask_input": {"id": made["id"], "index": 0}}]})
        assert refined["type"] == "result", refined

    never = str(uuid.uuid4())
    with open_session(as_client(app, "token-b")) as b:
        def refine(ref: dict, image_url: str) -> tuple[str, str]:
            answer = b.ask({"image_url": image_url, "prompts": [{"points": POINT, "mask_input": ref}]})
            assert answer["type"] == "error", answer
            return answer["code"], answer["message"].replace(ref["id"], "<id>")

        unknown = refine({"id": never, "index": 0}, data_url(PNG))
        assert unknown[0] == "mask_unknown"
        assert refine({"id": made["id"], "index": 0}, data_url(PNG)) == unknown  # the same image: no refinement
        other_image = data_url(image_files.png_rgb(30, 20))
        assert refine({"id": made["id"], "index": 0}, other_image) == unknown  # not "a result for another image"
        assert refine({"id": made["id"], "index": 4}, data_url(PNG)) == unknown  # nor "that result has 1 masks"


def test_one_token_flooding_the_caches_leaves_anothers_embedding_and_mask(start_app):
    """The finding: 8 images evicted every embedding (EMBEDDING_CACHE_SIZE 8), 64 requests every mask (MASK_CACHE_SIZE 64)."""
    app = start_app(api_token=TOKENS)
    assert (app.settings.embedding_cache_size, app.settings.mask_cache_size) == (8, 64)
    with open_session(as_client(app, "token-a")) as a:
        kept = a.ask({"image_url": data_url(PNG), "prompts": [{"points": POINT}]})
        assert kept["type"] == "result"
        with open_session(as_client(app, "token-b")) as b:
            for n in range(8):
                flood = b.ask({"image_url": data_url(image_files.png_rgb(40 + n, 30)), "prompts": [{"points": POINT}]})
                assert flood["type"] == "result", flood
            for _ in range(56):
                click = b.ask({"image_sha256": flood["image"]["sha256"], "prompts": [{"points": POINT}]})
                assert click["type"] == "result", click
        again = a.ask({"image_sha256": SHA, "prompts": [{"points": POINT, "mask_input": {"id": kept["id"], "index": 0}}]})
    assert again["type"] == "result", again
    assert again["cached_embedding"] is True
