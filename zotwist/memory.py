# -*- test-case-name: tests.test_memory -*-
"""
Keeping the server's memory flat under large uploads.

Upload bodies arrive in 1 MiB reads that live only until the disk thread
has written them.  glibc's allocator, left to itself, raises its mmap
threshold after the first such buffer is freed and from then on serves them
from per-thread heaps ("arenas"), which keep freed memory and fragment: the
resident size of a process then grows with the number of uploads it has
seen, not with what it holds.  Fixing the mmap threshold (big buffers are
mapped and unmapped, so freeing them returns them to the system at once)
and capping the number of arenas keeps it flat.
"""

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Allocations from this size on are mmapped (and returned on free).
MMAP_THRESHOLD = 256 * 1024
#: Arenas shared by all threads.
ARENA_MAX = 2


def tuneAllocator() -> bool:
    """
    Apply the settings above through C{mallopt}, where the C library has it
    (glibc).  Safe to call more than once.

    @return: whether both settings were accepted.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_ARENA_MAX, ARENA_MAX)
    )
