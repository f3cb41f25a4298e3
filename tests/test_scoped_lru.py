"""The caches of recent work, shared fairly by API tokens' scopes: one token cannot evict everyone's.

`ScopedLru` is the map both caches use; `MaskCache` and `EmbeddingCache` are
checked through their own interfaces, as the processor uses them.
"""

from __future__ import annotations

import numpy as np
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from server.errors import ClientError
from server.mask_cache import MaskCache
from server.masks import Postprocess
from server.models.embedding_cache import EmbeddingCache
from server.scoped_lru import ScopedLru
from server.tokens import Tokens, scope_of


def keys_of(cache: ScopedLru, candidates) -> list:
    return [key for key in candidates if key in cache]


def test_with_one_scope_it_is_a_plain_lru_map():
    cache: ScopedLru[str] = ScopedLru(3)
    for key in "abc":
        assert cache.put(key, key.upper())
    assert cache.get("a") == "A"  # made recent: b is now the oldest
    cache.put("d", "D")
    assert keys_of(cache, "abcd") == ["a", "c", "d"] and len(cache) == 3
    assert cache.peek("c") == "C" and cache.get("b") is None
    nothing: ScopedLru[str] = ScopedLru(0)
    assert not nothing.put("a", "A") and len(nothing) == 0


def test_a_scope_past_its_share_loses_its_own_oldest_entries_not_anothers():
    cache: ScopedLru[int] = ScopedLru(8)
    cache.put("a1", 1, scope="A")
    for n in range(1, 9):
        cache.put(f"b{n}", n, scope="B")
    assert "a1" in cache
    assert keys_of(cache, [f"b{n}" for n in range(1, 9)]) == ["b5", "b6", "b7", "b8"]  # B's share: 8 ÷ 2


def test_a_newcomer_takes_room_from_the_scope_holding_the_most():
    cache: ScopedLru[int] = ScopedLru(8)
    for n in range(8):
        cache.put(f"a{n}", n, scope="A")  # alone, A may fill the cache
    for n in range(4):
        cache.put(f"b{n}", n, scope="B")
    assert keys_of(cache, [f"a{n}" for n in range(8)]) == ["a4", "a5", "a6", "a7"]
    assert keys_of(cache, [f"b{n}" for n in range(4)]) == ["b0", "b1", "b2", "b3"]
    cache.put("c0", 0, scope="C")  # A and B hold 4 each: the one whose oldest is older gives one up
    assert "a4" not in cache and "b0" in cache and "c0" in cache and len(cache) == 8


def test_an_entry_heavier_than_its_scopes_share_is_not_kept_and_evicts_nothing():
    cache: ScopedLru[str] = ScopedLru(4, weight_capacity=12)
    assert not cache.put("huge", "x", scope="A", weight=13)
    assert cache.put("a", "x", scope="A", weight=12)  # alone, A's share is the whole weight
    assert not cache.put("b", "x", scope="B", weight=7)  # with A there, B's share is 6
    assert "a" in cache and "b" not in cache
    assert cache.put("b", "x", scope="B", weight=6)
    assert "a" not in cache and "b" in cache  # over 12 in all: A, holding the most, gave its entry up


def test_one_tokens_many_small_results_leave_anothers_mask_to_refine():
    cache = MaskCache(64)
    logits = np.zeros((1, 1, 4, 4), dtype=np.float32)
    scores, post = np.zeros((1, 1), dtype=np.float32), Postprocess(4, (4, 4), (4, 4))
    cache.put("a-result", "sha-a", False, logits, scores, post, scope="A")
    for n in range(64):
        cache.put(f"b-{n}", "sha-b", False, logits, scores, post, scope="B")
    cache.check("prompts[0]", {"id": "a-result", "index": 0}, "sha-a", scope="A")
    assert cache.logits("prompts[0]", {"id": "b-63", "index": 0}, "sha-b", scope="B").shape == (1, 4, 4)
    with pytest.raises(ClientError):  # B's oldest went, to keep B within its share
        cache.check("prompts[0]", {"id": "b-0", "index": 0}, "sha-b", scope="B")


def test_another_tokens_result_is_refused_with_the_words_of_an_unknown_one():
    cache = MaskCache(8)
    logits, scores = np.zeros((1, 3, 4, 4), dtype=np.float32), np.zeros((1, 3), dtype=np.float32)
    cache.put("a-result", "sha-a", True, logits, scores, Postprocess(4, (4, 4), (4, 4)), scope="A")

    def refusal(ref: dict, sha: str) -> tuple[str, str]:
        with pytest.raises(ClientError) as refused:
            cache.check("prompts[0]", ref, sha, scope="B")
        return refused.value.code, refused.value.message.replace(ref["id"], "<id>")

    unknown = refusal({"id": "no-such-result", "index": 0}, "sha-a")
    assert unknown[0] == "mask_unknown"
    for probe in ({"id": "a-result", "index": 0}, {"id": "a-result", "index": 5, "candidate": 9}):
        for sha in ("sha-a", "sha-other"):  # neither the image, the index nor the candidate tells B it exists
            assert refusal(probe, sha) == unknown


def test_the_embedding_cache_keeps_each_scopes_share_and_still_counts_hits():
    cache = EmbeddingCache(8)
    cache.put(("sha-a", "vit_b", "A"), "embedding of A", scope="A")
    for n in range(8):
        cache.put((f"sha-{n}", "vit_b", "B"), f"embedding {n}", scope="B")
    assert cache.get(("sha-a", "vit_b", "A")) == "embedding of A"
    assert ("sha-a", "vit_b", "B") not in cache  # the same image is another entry for another scope
    assert cache.get(("sha-0", "vit_b", "B")) is None
    assert (cache.hits, cache.misses) == (1, 1)


def request_with(path: str = "/", authorization: str | None = None) -> Request:
    headers = Headers([("Authorization", authorization)] if authorization else [])
    return Request(path, headers)


def test_each_token_is_a_scope_named_by_a_keyed_hash_never_by_the_token():
    tokens = Tokens("token-a, token-b")
    a = tokens.scope(request_with("/?token=token-a"))
    assert a == tokens.scope(request_with(authorization="Bearer token-a")) == scope_of(b"token-a")
    assert a != tokens.scope(request_with("/?token=token-b"))
    assert "token" not in a and len(a) == 16
    assert tokens.scope(request_with("/?token=wrong")) is None and not tokens.authorized(request_with("/?token=wrong"))
    assert Tokens(None).scope(request_with("/?token=token-a")) is None and Tokens(None).authorized(request_with())
