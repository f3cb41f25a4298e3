"""The bytes and files under IMAGE_DIR, kept as files come and go, for `/metrics`.

Nothing lists IMAGE_DIR to answer a scrape. The image store counts each
file it writes, moves or deletes; what was there before the server started
is counted by the first sweep pass, which walks IMAGE_DIR one folder after
another, in a fixed order (each folder's `rank`, server/image_layout.py).
While that pass runs, a file written or deleted where it has yet to reach
is left to it (it will count the file, or never see it), so that no file is
counted twice or taken off uncounted. Pure bookkeeping: the caller holds
the lock.
"""

from __future__ import annotations


class Usage:
    def __init__(self) -> None:
        self.bytes = 0
        self.files = 0
        self._counting = True  # the first pass has not ended
        self._rank = -1  # the folder the first pass is in
        self._uncounted: set[str] = set()  # names in that folder the pass has yet to reach

    def add(self, rank: int, name: str, size: int) -> None:
        """A file was written (or moved in)."""
        if not self._pass_will_count(rank, name):
            self._change(size, 1)

    def remove(self, rank: int, name: str, size: int) -> None:
        """A file was deleted (or moved out)."""
        if not self._pass_will_count(rank, name):  # else the pass, which has yet to reach it, never counted it
            self._change(-size, -1)

    def enter(self, rank: int, names: list[str]) -> None:
        """The pass lists a folder: during the first, its names are counted as it reaches them."""
        if self._counting:
            self._rank = rank
            self._uncounted = set(names)

    def found(self, rank: int, name: str, size: int | None) -> None:
        """The pass reached an entry: a file of `size` bytes, or None (gone, or not a file)."""
        if self._counting and rank == self._rank and name in self._uncounted:
            self._uncounted.discard(name)
            if size is not None:
                self._change(size, 1)

    def finish(self) -> None:
        """A pass ended: from now on every file is counted as it comes and goes."""
        self._counting = False
        self._uncounted = set()

    def _pass_will_count(self, rank: int, name: str) -> bool:
        return self._counting and (rank > self._rank or (rank == self._rank and name in self._uncounted))

    def _change(self, size: int, files: int) -> None:
        self.bytes += size
        self.files += files
