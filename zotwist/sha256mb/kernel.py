# -*- test-case-name: tests.test_sha256mb -*-
"""
The compiled multi-buffer SHA-256 kernel (C{_sha256mb.c}), loaded with ctypes.

It is a plain C library, not a Python extension: ctypes releases the GIL for
the call, so the other threads (and the reactor) run while it hashes.  It is
built by C{setup.py} (optional: without a compiler, or on a CPU without
AVX2, zotwist hashes with C{hashlib}).

Single-lane rounds go to OpenSSL's own SHA-256 instead (its one-stream code is
faster than one busy lane out of eight), through C{SHA256_Update} on a
C{SHA256_CTX} whose chaining words are the stream's state: libcrypto 3 still
exports it (deprecated, not removed), as L{zotwist.storage.s3.hashing} relies on.
"""

import ctypes
import ctypes.util
import importlib.machinery
import os
import struct
import threading

#: Lanes per kernel call.
LANES = 8

#: SHA-256's initial chaining value.
INITIAL_STATE = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
    0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)  # fmt: skip

#: Kernel numbers as C{sha256mb_run} takes them, and their names.
NONE, AVX2, AVX512 = 0, 1, 2
KERNEL_NAMES = {NONE: "none", AVX2: "AVX2", AVX512: "AVX-512VL"}

State = ctypes.c_uint32 * 8


class Segment(ctypes.Structure):
    """
    Whole 64-byte blocks of a buffer: C{blocks} of them from byte C{skip} of
    C{data}.  C{data} is a C{c_char_p}: assigning a C{bytes} object stores a
    pointer to its own buffer (no copy) and keeps the object alive.
    """

    _fields_ = [
        ("data", ctypes.c_char_p),
        ("skip", ctypes.c_uint64),
        ("blocks", ctypes.c_uint64),
    ]


class Lane(ctypes.Structure):
    """
    One stream's work for the kernel: its state (updated in place), its list
    of segments, and a cursor (segment C{index}, blocks of it already hashed
    C{offset}) that the kernel advances.  Done when C{index == count}.
    """

    _fields_ = [
        ("state", ctypes.POINTER(ctypes.c_uint32)),
        ("segments", ctypes.POINTER(Segment)),
        ("count", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
    ]


LaneArray = ctypes.POINTER(Lane) * LANES
_DATA_OFFSET = Segment.data.offset

_HERE = os.path.dirname(os.path.abspath(__file__))


def libraryPath() -> str | None:
    """
    @return: the path of the built kernel library next to this file (built by
        C{setup.py build_ext}, with or without C{--inplace}), or C{None}.
    """
    for suffix in importlib.machinery.EXTENSION_SUFFIXES + [".so"]:
        path = os.path.join(_HERE, "_sha256mb" + suffix)
        if os.path.exists(path):
            return path
    return None


class _OpenSSLSingle:
    """
    One lane at OpenSSL's single-stream speed: C{SHA256_Update} on a context
    holding the lane's state, whole blocks only (so it never buffers).
    """

    #: sizeof(SHA256_CTX): h[8], Nl, Nh, data[16], num, md_len.
    _CONTEXT = 112

    def __init__(self, library):
        self._update = library.SHA256_Update
        self._update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        self._update.restype = ctypes.c_int
        self._init = library.SHA256_Init
        self._init.argtypes = [ctypes.c_void_p]
        self._init.restype = ctypes.c_int
        self._local = threading.local()
        self._check()

    @property
    def _context(self):
        """
        This thread's C{SHA256_CTX}: the mill hashes on several threads.
        """
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = ctypes.create_string_buffer(self._CONTEXT)
        return context

    def _check(self) -> None:
        """
        Make sure the context starts with the chaining words, as this code
        assumes: C{SHA256_Init} must write the initial state there.
        """
        context = self._context
        self._init(context)
        if struct.unpack_from("=8I", context.raw) != INITIAL_STATE:
            raise OSError("unexpected SHA256_CTX layout")

    def run(self, lane: Lane, maxBlocks: int) -> None:
        """
        Hash up to C{maxBlocks} blocks of C{lane}, advancing it like the
        kernel does.  Thread-safe: each thread has its own context.
        """
        context = self._context
        ctypes.memmove(context, lane.state, 32)
        segments = lane.segments
        budget = maxBlocks
        index, offset = lane.index, lane.offset
        while index < lane.count and budget:
            segment = segments[index]
            take = min(segment.blocks - offset, budget)
            if take:
                # The buffer's address (reading a c_char_p field would copy
                # a NUL-terminated string out of it instead).
                base = ctypes.c_void_p.from_buffer(segment, _DATA_OFFSET).value
                self._update(context, base + segment.skip + 64 * offset, 64 * take)
                budget -= take
                offset += take
            if offset >= segment.blocks:
                index, offset = index + 1, 0
        lane.index, lane.offset = index, offset
        ctypes.memmove(lane.state, context, 32)


class Kernel:
    """
    The loaded library.

    @ivar kernel: which kernel L{run} uses (L{AVX2} or L{AVX512}).
    @ivar name: its name, for the log.
    @ivar single: OpenSSL's one-lane path, or C{None} when libcrypto is not
        usable (then one lane goes through the kernel too).
    @ivar shaExtensions: whether the CPU has the SHA extensions (SHA-NI),
        with which OpenSSL outruns the kernel (see L{zotwist.oci}).
    """

    def __init__(self, path: str, kernel: int | None = None, single: bool = True):
        library = ctypes.CDLL(path)
        library.sha256mb_best.argtypes = []
        library.sha256mb_best.restype = ctypes.c_int
        library.sha256mb_run.argtypes = [
            LaneArray,
            ctypes.c_int,
            ctypes.c_uint64,
            ctypes.c_int,
            ctypes.c_int,
        ]
        library.sha256mb_run.restype = ctypes.c_int
        library.sha256mb_cpu_has_sha.argtypes = []
        library.sha256mb_cpu_has_sha.restype = ctypes.c_int
        self.best = library.sha256mb_best()
        self.shaExtensions = bool(library.sha256mb_cpu_has_sha())
        if kernel is None:
            kernel = self.best
        if kernel == NONE or kernel > self.best:
            raise OSError(f"this CPU cannot run the {KERNEL_NAMES.get(kernel, kernel)} kernel")
        self.kernel = kernel
        self.name = KERNEL_NAMES[kernel]
        self._run = library.sha256mb_run
        self.single = None
        if single:
            try:
                name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
                self.single = _OpenSSLSingle(ctypes.CDLL(name))
            except (OSError, AttributeError):
                self.single = None

    def run(
        self, lanes: LaneArray, count: int, maxBlocks: int = 0, stopWhenDry: bool = False
    ) -> None:
        """
        Hash the first C{count} lanes of C{lanes} together, each at most
        C{maxBlocks} blocks (0: all of its segments).  Blocking, GIL released.

        @param stopWhenDry: return as soon as one lane has hashed all of its
            segments, rather than hashing the others on with that lane idle:
            the mill then refills it (the others keep their cursors).
        """
        if self._run(lanes, count, maxBlocks, self.kernel, 1 if stopWhenDry else 0) != 0:
            raise RuntimeError("sha256mb_run refused its arguments")


def loadKernel(kernel: int | None = None, single: bool = True) -> Kernel | None:
    """
    @return: the built kernel library, or C{None} when it is not built or
        the CPU lacks AVX2.
    """
    path = libraryPath()
    if path is None:
        return None
    try:
        return Kernel(path, kernel, single)
    except OSError:
        return None
