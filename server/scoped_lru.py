"""A least-recently-used map that scopes (API tokens) share fairly: one scope cannot evict everyone.

Both caches of recent work use it: image embeddings (`EmbeddingCache`,
server/models/embedding_cache.py) and mask logits (`MaskCache`, server/mask_cache.py).
Each entry belongs to a scope (server/tokens.py) and has a weight: 1 for an
embedding, its mask count for a kept result. In all, the map holds at most
`capacity` entries and `weight_capacity` weight. Each scope that holds
entries may hold at most its share, `capacity` ÷ those scopes (at least 1)
entries and the same fraction of the weight: a scope past its share loses
its own least recently used entries, and when the map is full anyway (a
scope newly arrived, its share not yet taken back), the scope holding the
most loses its least recently used one. An entry heavier than its scope's
share of the weight is not kept. With one scope it is a plain LRU map.

Not thread-safe: a caller that shares one between threads holds a lock.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Generic, Hashable, TypeVar

V = TypeVar("V")


@dataclasses.dataclass
class _Entry(Generic[V]):
    scope: str | None
    value: V
    weight: int
    used: int  # when it was last put or got: a tick of the map's clock


class ScopedLru(Generic[V]):
    def __init__(self, capacity: int, weight_capacity: int | None = None):
        self.capacity = capacity
        self.weight_capacity = capacity if weight_capacity is None else weight_capacity
        self._entries: dict[Hashable, _Entry[V]] = {}
        self._by_scope: dict[str | None, collections.OrderedDict[Hashable, None]] = {}  # least recent first
        self._weights: collections.Counter[str | None] = collections.Counter()
        self._clock = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        """Whether `key` is kept; unlike `get`, it is not made recent."""
        return key in self._entries

    def peek(self, key: Hashable) -> V | None:
        """The value, not made recent."""
        entry = self._entries.get(key)
        return None if entry is None else entry.value

    def get(self, key: Hashable) -> V | None:
        """The value, made the most recent of its scope's."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        entry.used = next(self._clock)
        self._by_scope[entry.scope].move_to_end(key)
        return entry.value

    def share(self, scope: str | None) -> tuple[int, int]:
        """The entries and the weight that `scope` may hold, counting it among the scopes that hold entries."""
        if self.capacity <= 0:
            return 0, 0
        entries = max(1, self.capacity // len(self._by_scope.keys() | {scope}))
        return entries, self.weight_capacity * entries // self.capacity

    def put(self, key: Hashable, value: V, *, scope: str | None = None, weight: int = 1) -> bool:
        """Keep `value` as the most recent of `scope`'s; False (and nothing kept) when it is over its share."""
        self.discard(key)
        entries, weights = self.share(scope)
        if entries == 0 or weight > weights:
            return False
        self._entries[key] = _Entry(scope, value, weight, next(self._clock))
        self._by_scope.setdefault(scope, collections.OrderedDict())[key] = None
        self._weights[scope] += weight
        while len(self._by_scope[scope]) > entries or self._weights[scope] > weights:
            self.discard(next(iter(self._by_scope[scope])))  # never `key`: alone, it fits the share
        while len(self._entries) > self.capacity or sum(self._weights.values()) > self.weight_capacity:
            self.discard(self._from_the_largest(spare=key))
        return True

    def discard(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        keys = self._by_scope[entry.scope]
        del keys[key]
        self._weights[entry.scope] -= entry.weight
        if not keys:
            del self._by_scope[entry.scope]
            del self._weights[entry.scope]

    def _from_the_largest(self, spare: Hashable) -> Hashable:
        """The least recent entry of the scope holding the most (of what is over), other than `spare`."""
        by_weight = len(self._entries) <= self.capacity
        oldest = {scope: next(iter(keys)) for scope, keys in self._by_scope.items() if next(iter(keys)) != spare}

        def size(scope: str | None) -> tuple[int, int]:
            held = self._weights[scope] if by_weight else len(self._by_scope[scope])
            return held, -self._entries[oldest[scope]].used  # a tie: the scope whose oldest is older

        return oldest[max(oldest, key=size)]
