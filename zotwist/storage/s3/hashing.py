# -*- test-case-name: tests.test_s3_hashing -*-
"""
A SHA-256 / SHA-512 whose running state is plain bytes, so a chunked upload
can be hashed by one process, saved to Redis, and continued by another.

C{hashlib} objects cannot be serialized, and the C{rehash} package does not
build against OpenSSL 3.  OpenSSL's low-level C{SHA256_Init/Update/Final}
(and C{SHA512_*}) are still exported by libcrypto 3 (deprecated, not
removed); they work on a caller-owned C{SHA256_CTX}/C{SHA512_CTX}, a struct
of plain integers and a data block with no pointers, so its bytes ARE the
state: copy them out, copy them back in, continue.  ctypes releases the GIL
for the call, so hashing runs at OpenSSL's speed and beside other threads.

A saved state is only meaningful to the same libcrypto build on the same
architecture (struct layout and endianness): the instances of one cluster.
L{ResumableHash.fromState} checks the length, and the state carries a
one-byte algorithm tag.
"""

import ctypes
import ctypes.util

_libcrypto = None

#: algorithm -> (context size in bytes, Init, Update, Final, digest size).
_FUNCTIONS = {
    "sha256": (112, "SHA256_Init", "SHA256_Update", "SHA256_Final", 32),
    "sha512": (216, "SHA512_Init", "SHA512_Update", "SHA512_Final", 64),
}
_TAGS = {"sha256": b"\x01", "sha512": b"\x02"}
_BY_TAG = {tag: algorithm for algorithm, tag in _TAGS.items()}


def _library():
    """
    Load libcrypto once and declare the functions' signatures.
    """
    global _libcrypto
    if _libcrypto is None:
        name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
        library = ctypes.CDLL(name)
        for _, init, update, final, _ in _FUNCTIONS.values():
            getattr(library, init).argtypes = [ctypes.c_void_p]
            getattr(library, init).restype = ctypes.c_int
            getattr(library, update).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            getattr(library, update).restype = ctypes.c_int
            getattr(library, final).argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            getattr(library, final).restype = ctypes.c_int
        _libcrypto = library
    return _libcrypto


class ResumableHash:
    """
    A running SHA-256 or SHA-512 with an exportable state.

    Not thread-safe: one upload writes to it at a time (it is used under the
    session's lock).

    @ivar algorithm: C{"sha256"} or C{"sha512"}.
    """

    def __init__(self, algorithm: str, _context: bytes | None = None):
        if algorithm not in _FUNCTIONS:
            raise ValueError(f"no resumable hash for {algorithm!r}")
        self.algorithm = algorithm
        size, init, self._update, self._final, self._digestSize = _FUNCTIONS[algorithm]
        self._lib = _library()
        self._ctx = ctypes.create_string_buffer(size)
        if _context is None:
            if getattr(self._lib, init)(self._ctx) != 1:
                raise RuntimeError(f"{init} failed")
        else:
            if len(_context) != size:
                raise ValueError(f"a {algorithm} state is {size} bytes, not {len(_context)}")
            ctypes.memmove(self._ctx, _context, size)

    @classmethod
    def fromState(cls, state: bytes) -> "ResumableHash":
        """
        Continue a hash from L{state}'s bytes.

        @raise ValueError: if they are not a state of this kind.
        """
        algorithm = _BY_TAG.get(state[:1])
        if algorithm is None:
            raise ValueError("not a resumable hash state")
        return cls(algorithm, state[1:])

    def state(self) -> bytes:
        """
        The running state: an algorithm tag and the context's bytes.
        """
        return _TAGS[self.algorithm] + self._ctx.raw

    def update(self, data) -> None:
        """
        Hash more bytes (C{bytes}, C{bytearray} or a contiguous
        C{memoryview}).
        """
        if not data:
            return
        if isinstance(data, bytes):
            pointer, length = data, len(data)
        else:
            view = memoryview(data).cast("B")
            length = len(view)
            if view.readonly:
                pointer = bytes(view)
            else:
                pointer = ctypes.addressof(ctypes.c_char.from_buffer(view))
        if getattr(self._lib, self._update)(self._ctx, pointer, length) != 1:
            raise RuntimeError(f"{self._update} failed")

    def copy(self) -> "ResumableHash":
        """
        An independent hash with the same state.
        """
        return ResumableHash(self.algorithm, self._ctx.raw)

    def digest(self) -> bytes:
        """
        The digest of everything hashed so far; this object stays usable
        (Final runs on a copy of the context).
        """
        ctx = ctypes.create_string_buffer(self._ctx.raw, len(self._ctx))
        out = ctypes.create_string_buffer(self._digestSize)
        if getattr(self._lib, self._final)(out, ctx) != 1:
            raise RuntimeError(f"{self._final} failed")
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()
