# -*- test-case-name: tests.test_memory -*-
"""
Keeping the server's memory flat under large uploads.

Upload bodies arrive in reads of about 252 KiB that live only until the
disk thread has written them.  glibc's allocator, left to itself, raises
its mmap threshold after the first big buffer is freed and from then on
serves such buffers from per-thread heaps ("arenas"), which keep freed
memory and fragment: the resident size of a process then grows with the
number of uploads it has seen, not with what it holds.  Fixing the mmap
threshold (just above the read size), capping the number of arenas, and
letting a few MiB of free memory stay at the top of the heap (so that the
same buffers are reused, not given back and faulted in again) keeps it
flat and cheap.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Allocations from this size on are mmapped (and returned on free).
MMAP_THRESHOLD = 256 * 1024
#: Arenas shared by all threads.
ARENA_MAX = 2
#: Free memory at the top of the heap is given back to the system only past
#: this size.  Setting the mmap threshold fixes this one at glibc's 128 KiB,
#: so every freed upload read (just under the mmap threshold) shrank the
#: heap and the next read grew it again, page-faulting it in: 58-88 minor
#: faults per MB pushed.  At 8 MiB there were still 5-14 per MB once
#: uploads could keep two batches in the hasher (four pushes hold about
#: 30 MiB of reads at once); at 32 MiB, none (9 faults in a 512 MB push
#: run), with the same peak resident size.
TRIM_THRESHOLD = 32 * 1024 * 1024


def tuneAllocator() -> bool:
    """
    Apply the settings above through C{mallopt}, where the C library has it
    (glibc).  Safe to call more than once.

    @return: whether all settings were accepted.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return (
        bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
        and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    )
