"""Captured output: what an item prints, bounded, on both sides of the wire.

Where the item runs, :class:`BoundedText` keeps the head of its output to stream at once
and a rolling tail; in the caller, :class:`LogStore` keeps every item's output with the
same bound (the head and the tail, with a marker for what was dropped between them).
"""

from __future__ import annotations

import array
import collections

LOG_HEAD = 512 * 1024  # characters of an item's output kept from the start ...
LOG_TAIL = 512 * 1024  # ... and from the end; what lies between is dropped with a marker


class BoundedText:
    """Keeps the first ``head`` and the last ``tail`` characters of a stream of tagged text.

    ``add`` returns the part of the text that falls in the head (to keep or stream at
    once); later text waits in a rolling tail until :meth:`tail_chunks`.
    """

    __slots__ = ("_head_left", "_tail", "_tail_len", "_tail_limit", "dropped")

    def __init__(self, head: int = LOG_HEAD, tail: int = LOG_TAIL) -> None:
        self._head_left = head
        self._tail: collections.deque[list[str]] = collections.deque()
        self._tail_len = 0
        self._tail_limit = tail
        self.dropped = 0

    def add(self, tag: str, text: str) -> str:
        if self._head_left >= len(text):
            self._head_left -= len(text)
            return text
        kept, rest = text[: self._head_left], text[self._head_left :]
        self._head_left = 0
        self._tail.append([tag, rest])
        self._tail_len += len(rest)
        while self._tail_len > self._tail_limit:
            excess = self._tail_len - self._tail_limit
            first = self._tail[0]
            if len(first[1]) <= excess:
                self._tail.popleft()
                cut = len(first[1])
            else:
                first[1] = first[1][excess:]
                cut = excess
            self._tail_len -= cut
            self.dropped += cut
        return kept

    def tail_chunks(self) -> list[tuple[str, str]]:
        """The marker for dropped text (if any) and the tail, as (tag, text) chunks."""
        out = []
        if self.dropped:
            out.append(("stderr", f"\n[mapnb: {self.dropped:,} characters of output dropped here]\n"))
        out += [(tag, text) for tag, text in self._tail]
        return out


class LogStore:
    """Every item's captured output, bounded per item (head and tail are kept)."""

    def __init__(self, n: int) -> None:
        self._chunks: list[list[tuple[str, str]] | None] = [None] * n
        self._bounds: dict[int, BoundedText] = {}
        self._attempt = array.array("i", bytes(4 * n))  # 4 bytes an item, not a list's 8

    def add(self, index: int, attempt: int, stream: str, text: str) -> None:
        chunks = self._chunks[index]
        if chunks is None:
            chunks = self._chunks[index] = []
            self._bounds[index] = BoundedText()
        if attempt != self._attempt[index]:
            if self._attempt[index]:
                chunks.append(("stderr", f"--- attempt {attempt} ---\n"))
            self._attempt[index] = attempt
        kept = self._bounds[index].add(stream, text)
        if kept:
            chunks.append((stream, kept))

    def grow(self, count: int) -> None:
        """Room for ``count`` more items (a sweep that grew)."""
        self._chunks.extend([None] * count)
        self._attempt.extend([0] * count)

    def indices(self) -> list[int]:
        """The items that wrote anything, in order."""
        return sorted(self._bounds)

    def chunks(self, index: int) -> list[tuple[str, str]]:
        """The item's output so far as (stream, text) pieces, in the order written."""
        chunks = self._chunks[index]
        if chunks is None:
            return []
        return list(chunks) + self._bounds[index].tail_chunks()

    def text(self, index: int, stream: str | None = None) -> str:
        return "".join(t for s, t in self.chunks(index) if stream is None or s == stream)
