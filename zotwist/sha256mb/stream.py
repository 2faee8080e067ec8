# -*- test-case-name: tests.test_sha256mb -*-
"""
A SHA-256 object with hashlib's surface whose whole blocks go through the
multi-buffer L{Mill}.

The state is the chaining value (eight words, in a ctypes array the kernel
updates in place), the bytes of an unfinished block (under 64), and the
total length.  An update turns its data into a list of segments: the old
tail completed by the head of the data becomes one block of its own, then
each chunk's whole blocks are hashed straight from the chunk (no copy), and
what is left over becomes the new tail.  The final padding is built here and
hashed by the same kernel on a copy of the state, so a digest can be taken
and the stream continued, as with hashlib.
"""

import struct

from zotwist.sha256mb.kernel import INITIAL_STATE, Lane, Segment, State
from zotwist.sha256mb.mill import Mill


def _segments(tail: bytes, chunks) -> tuple[list, bytes, int]:
    """
    @return: C{(segments, tail, length)}: the whole blocks of C{tail}
        followed by C{chunks} as C{(buffer, skip, blocks)} triples, the bytes
        left over, and the length of C{chunks}.
    """
    segments = []
    length = 0
    for chunk in chunks:
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        size = len(chunk)
        length += size
        start = 0
        if tail:
            need = 64 - len(tail)
            if size < need:
                tail += chunk
                continue
            segments.append((tail + chunk[:need], 0, 1))
            start = need
        blocks = (size - start) >> 6
        if blocks:
            segments.append((chunk, start, blocks))
        tail = chunk[start + (blocks << 6) :]
    return segments, tail, length


class Sha256:
    """
    A running SHA-256 hashed by a L{Mill}.

    Like a hashlib object, one thread updates it at a time.
    """

    name = "sha256"
    digest_size = 32
    block_size = 64

    __slots__ = ("_mill", "_track", "_state", "_tail", "_length")

    def __init__(self, mill: Mill, data: bytes = b""):
        self._mill = mill
        self._track = mill.track()
        self._state = State(*INITIAL_STATE)
        self._tail = b""
        self._length = 0
        if data:
            self.update(data)

    def update(self, data) -> None:
        """
        Hash C{data} (bytes-like).  It is hashed in the background: the call
        returns once the mill has taken it, and may block while the stream's
        earlier data is hashed (see L{zotwist.sha256mb.mill.DEPTH}).  C{bytes}
        are hashed where they are (they cannot change); other bytes-like
        data is copied first, so the caller may reuse its buffer.
        """
        self.updateAll((data,))

    def updateAll(self, chunks) -> None:
        """
        Hash several chunks in order, in one trip through the mill.
        """
        segments, tail, length = _segments(self._tail, chunks)
        if segments:
            array = (Segment * len(segments))(*segments)
            self._mill.submit(self._track, Lane(self._state, array, len(segments), 0, 0))
        self._tail = tail
        self._length += length

    @property
    def pending(self) -> bool:
        """
        Whether some of the data is still being hashed in the background.
        """
        return self._track.outstanding > 0

    def settle(self) -> None:
        """
        Block until all the data so far is hashed (so that L{digest} will
        not block).
        """
        self._mill.wait(self._track)

    def digest(self) -> bytes:
        """
        @return: the digest of everything so far; the stream can go on.
        Blocks until the mill has hashed all of it.
        """
        self._mill.wait(self._track)
        tail = self._tail
        final = (
            tail + b"\x80" + b"\0" * ((55 - len(tail)) % 64) + (8 * self._length).to_bytes(8, "big")
        )
        state = State.from_buffer_copy(self._state)
        segments = (Segment * 1)((final, 0, len(final) >> 6))
        self._mill.runAlone(Lane(state, segments, 1, 0, 0))
        return struct.pack(">8I", *state)

    def hexdigest(self) -> str:
        return self.digest().hex()

    def copy(self) -> "Sha256":
        """
        @return: an independent hasher in the same state.
        """
        self._mill.wait(self._track)
        other = Sha256.__new__(Sha256)
        other._mill = self._mill
        other._track = self._mill.track()
        other._state = State.from_buffer_copy(self._state)
        other._tail = self._tail
        other._length = self._length
        return other
