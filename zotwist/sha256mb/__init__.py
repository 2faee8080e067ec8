# -*- test-case-name: tests.test_sha256mb -*-
"""
Multi-buffer SHA-256: the blobs of concurrent uploads hashed together.

Pushes are bound by SHA-256, and one stream of it cannot be parallelised.
Several streams can: the C kernel (C{_sha256mb.c}) hashes eight of them at
once, one per 32-bit lane of the AVX2 (or AVX-512VL) registers, and the
L{Mill} gathers the blocks that upload threads hand it into shared kernel
calls.  With four uploads one core hashes about as much as four would with
hashlib, leaving the other core to the network and the disk.

L{new} returns a hashlib-like object when the kernel is built and the CPU
runs it; L{available} says whether it is.  Its updates are hashed in the
background: L{pending} and L{settle} let a caller wait for them in a thread
rather than in a digest taken on the reactor thread.  Otherwise zotwist uses hashlib
(see L{zotwist.oci.newHasher}).
"""

import threading

from zotwist.sha256mb.kernel import Kernel, loadKernel
from zotwist.sha256mb.mill import Mill
from zotwist.sha256mb.stream import Sha256

__all__ = [
    "Mill",
    "Sha256",
    "available",
    "defaultMill",
    "describe",
    "hashChunks",
    "new",
    "pending",
    "settle",
    "shaExtensions",
]

_lock = threading.Lock()
_mill: Mill | None = None
_loaded = False


def defaultMill() -> Mill | None:
    """
    @return: the process's mill, or C{None} when the kernel is not usable.
    """
    global _mill, _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                kernel: Kernel | None = loadKernel()
                _mill = Mill(kernel) if kernel is not None else None
                _loaded = True
    return _mill


def available() -> bool:
    """
    @return: whether the multi-buffer kernel is built and runs on this CPU.
    """
    return defaultMill() is not None


def shaExtensions() -> bool:
    """
    @return: whether the CPU has the SHA extensions (SHA-NI).  OpenSSL, and
        so hashlib, then hashes a single stream at 1.5-2 GB/s, faster than
        this kernel hashes eight, and zotwist hashes with hashlib.
    """
    mill = defaultMill()
    return mill is not None and mill.kernel.shaExtensions


def describe() -> str:
    """
    @return: what SHA-256 uses here, for the log.
    """
    mill = defaultMill()
    if mill is None:
        return "hashlib (the multi-buffer kernel is not built or the CPU lacks AVX2)"
    single = "OpenSSL" if mill.kernel.single is not None else "the kernel"
    return f"multi-buffer {mill.kernel.name} kernel, 8 lanes (single lane: {single})"


def new(data: bytes = b"") -> Sha256:
    """
    @return: a fresh multi-buffer SHA-256 object.
    @raise RuntimeError: when the kernel is not available.
    """
    mill = defaultMill()
    if mill is None:
        raise RuntimeError("the multi-buffer SHA-256 kernel is not available")
    return Sha256(mill, data)


def hashChunks(hasher, chunks) -> None:
    """
    Feed C{chunks} to C{hasher} in order: in one trip through the mill for
    a L{Sha256}, one C{update} each for a hashlib object.
    """
    updateAll = getattr(hasher, "updateAll", None)
    if updateAll is not None:
        updateAll(chunks)
    else:
        for chunk in chunks:
            hasher.update(chunk)


def pending(hasher) -> bool:
    """
    @return: whether C{hasher} is still hashing data in the background (a
        L{Sha256}; never for a hashlib object): its digest would block.
    """
    return getattr(hasher, "pending", False)


def settle(hasher) -> None:
    """
    Block until C{hasher} has hashed all its data (nothing to do for a
    hashlib object), so that its digest can be taken without blocking.
    """
    settle = getattr(hasher, "settle", None)
    if settle is not None:
        settle()
