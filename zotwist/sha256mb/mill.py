# -*- test-case-name: tests.test_sha256mb -*-
"""
The mill: the blocks of many streams hashed together, in the background.

An upload thread hands its stream's whole blocks to L{Mill.submit} and goes
back to its work (writing the next batch to disk) while the mill's thread
hashes them: every round puts up to eight streams with pending work into
the kernel's lanes and hashes them together, a bounded share per lane, so
lanes stay evenly busy and a stream that arrives mid-way joins at the next
round.  Like C{isa-l}'s multi-buffer hashing, work is submitted and
collected later (L{Mill.wait}, before a digest) rather than hashed while
the caller waits: each stream then keeps its lane busy with its next batch
while the caller prepares the one after, and lanes stay full.

Memory stays bounded: a stream may have L{DEPTH} batches in the mill, and
all streams together about L{BUDGET} bytes; a caller submitting more waits.
"""

import ctypes
import os
import threading
from collections import deque

from zotwist.sha256mb.kernel import LANES, Kernel, Lane, LaneArray

#: Bytes per lane per round: small enough that a stream arriving mid-way
#: soon gets a lane, large enough that a round's Python bookkeeping (tens
#: of microseconds) is nothing next to its hashing (about a millisecond).
QUANTUM = 256 * 1024

#: Batches a stream may have submitted and not yet hashed when
#: L{Mill.submit} returns.  Each holds its chunks (up to the writer's
#: high-water mark).  With one, a stream's lane ran dry whenever its writer
#: was between two batches (back to the reactor, resumed, the next write):
#: rounds then carried fewer lanes and cost more CPU per byte (four
#: uploads: 2.1-2.9 lanes per round on average instead of 3.2-3.8).
DEPTH = 2

#: Bytes of batches all streams together may have in the mill before a
#: caller submitting more waits: enough for eight full lanes two batches
#: deep, so that a hundred concurrent pushes do not each hold L{DEPTH}
#: batches (the blocked callers are upload threads, a bounded pool).
BUDGET = 32 * 1024 * 1024

#: Threads hashing: one per core.  All streams gather in one thread's
#: rounds, where a lane costs next to nothing; the second takes streams only
#: when the first has no lane left (more than L{LANES} uploads).  Two
#: single-lane rounds on two cores hash two streams no faster than one
#: two-lane round on one core, and burn twice the CPU (see L{_mayTake}).
THREADS = min(2, os.cpu_count() or 1)


class Track:
    """
    One stream's place in the mill: its queue of lanes (batches) and how
    many are not hashed yet.  Guarded by the mill's lock.
    """

    __slots__ = ("jobs", "current", "outstanding", "scheduled", "error", "changed")

    def __init__(self, lock: threading.Lock):
        self.jobs: deque[tuple[Lane, int]] = deque()
        self.current: tuple | None = None
        self.outstanding = 0
        self.scheduled = False
        self.error: BaseException | None = None
        self.changed = threading.Condition(lock)


def _current(job: tuple[Lane, int]) -> tuple:
    """
    @return: the lane of C{job}, a pointer to it (as the kernel takes it),
        and its size in bytes.
    """
    lane, size = job
    return (lane, ctypes.pointer(lane), size)


def _size(lane: Lane) -> int:
    """
    @return: the bytes C{lane} has left to hash.
    """
    segments = lane.segments
    return 64 * (sum(segments[i].blocks for i in range(lane.index, lane.count)) - lane.offset)


def _mayTake(mine: int, others: int) -> bool:
    """
    Whether a hashing thread holding C{mine} streams takes another from the
    ready queue while the busiest other thread holds C{others}.

    Lanes are nearly free in a round that runs anyway (a round costs the
    same with one lane busy as with eight), so streams gather in the
    fullest thread: an idle thread takes a stream only when no other
    thread holds any, or when the fullest has no lane left.  A stream that
    arrives while another thread's round runs waits for that thread's next
    round, at most one L{QUANTUM} per lane: rounds end as soon as one lane
    runs dry (the kernel's C{stopWhenDry}), so lanes are refilled promptly.
    """
    if others >= LANES:
        return True
    if mine == 0:
        return others == 0
    return mine >= others


class Mill:
    """
    Hashes the lanes of many streams in shared kernel calls, on threads of
    its own (L{THREADS} daemons started on first use, idle when there is no
    work; a stream is in one thread's round at a time, so its batches stay
    in order).

    @ivar rounds: kernel calls made so far; C{laneRounds}: lanes they
        carried (C{laneRounds / rounds} is the mean batch size).
    """

    def __init__(
        self,
        kernel: Kernel,
        quantum: int = QUANTUM,
        depth: int = DEPTH,
        threads: int = THREADS,
        budget: int = BUDGET,
    ):
        self.kernel = kernel
        self._threadCount = max(1, threads)
        self._blocks = max(1, quantum // 64)
        self._depth = depth
        self._budget = budget
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        # Batches finished: callers waiting in submit look again.
        self._room = threading.Condition(self._lock)
        #: Bytes of all the batches in the mill, not hashed yet.
        self.queued = 0
        self._ready: deque[Track] = deque()
        self._threads: list[threading.Thread] = []
        self._loads: dict[int, int] = {}
        self._stopping = False
        self.rounds = 0
        self.laneRounds = 0

    def track(self) -> Track:
        """
        @return: a new stream's place in the mill.
        """
        return Track(self._lock)

    def submit(self, track: Track, lane: Lane) -> None:
        """
        Queue C{lane} (a batch of C{track}'s stream, hashed after its earlier
        ones) and return once at most L{DEPTH} of the stream's batches are
        left to hash, and all streams' batches together hold at most
        L{BUDGET} bytes (or this stream's are all hashed).

        @raise BaseException: the error of an earlier batch of this stream.
        """
        size = _size(lane)
        with self._lock:
            if track.error is not None:
                raise track.error
            track.jobs.append((lane, size))
            track.outstanding += 1
            self.queued += size
            if not track.scheduled:
                track.scheduled = True
                self._ready.append(track)
                self._work.notify()
            while len(self._threads) < self._threadCount:
                thread = threading.Thread(target=self._loop, name="zotwist-sha256mb", daemon=True)
                self._threads.append(thread)
                thread.start()
            while track.error is None and (
                track.outstanding > self._depth
                or (track.outstanding and self.queued > self._budget)
            ):
                self._room.wait()

    def wait(self, track: Track) -> None:
        """
        Return once every batch of C{track} is hashed.

        @raise BaseException: the error of one of them.
        """
        with self._lock:
            while track.outstanding and track.error is None:
                track.changed.wait()
            if track.error is not None:
                raise track.error

    def runAlone(self, lane: Lane) -> None:
        """
        Hash C{lane} at once in this thread, in a kernel call of its own (a
        digest's one or two final blocks).  Thread-safe.
        """
        lanes = LaneArray()
        lanes[0] = ctypes.pointer(lane)
        self.kernel.run(lanes, 1)

    def stop(self) -> None:
        """
        Let the mill's thread end once it is idle, and wait for it (tests).
        """
        with self._lock:
            self._stopping = True
            self._work.notify_all()
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    def _loop(self) -> None:
        active: list[Track] = []
        kernel = self.kernel
        blocks = self._blocks
        lock = self._lock
        ready = self._ready
        loads = self._loads
        me = threading.get_ident()
        while True:
            with lock:
                others = max((n for t, n in loads.items() if t != me), default=0)
                while len(active) < LANES and ready and _mayTake(len(active), others):
                    track = ready.popleft()
                    track.current = _current(track.jobs.popleft())
                    active.append(track)
                loads[me] = len(active)
                if not active:
                    if self._stopping:
                        self._threads.remove(threading.current_thread())
                        return
                    self._work.wait()
                    continue
            count = len(active)
            try:
                single = kernel.single
                if count == 1 and single is not None:
                    single.run(active[0].current[0], blocks)
                else:
                    # A fresh array each round: an old one would keep the
                    # buffers of finished lanes alive.
                    lanes = LaneArray()
                    for i, track in enumerate(active):
                        lanes[i] = track.current[1]
                    kernel.run(lanes, count, blocks, True)
                    lanes = None
            except BaseException as error:
                with lock:
                    for track in active:
                        track.error = error
                        self.queued -= track.current[2] + sum(size for _, size in track.jobs)
                        track.jobs.clear()
                        track.current = None
                        track.outstanding = 0
                        track.scheduled = False
                        track.changed.notify_all()
                    self._room.notify_all()
                    active.clear()
                    loads[me] = 0
                continue
            self.rounds += 1
            self.laneRounds += count
            finished = [
                track for track in active if track.current[0].index >= track.current[0].count
            ]
            if finished:
                with lock:
                    for track in finished:
                        active.remove(track)
                        size = track.current[2]
                        track.current = None
                        track.outstanding -= 1
                        self.queued -= size
                        if track.jobs:
                            # Behind the streams waiting for a lane: fair
                            # when there are more streams than lanes.
                            ready.append(track)
                        else:
                            track.scheduled = False
                        track.changed.notify_all()
                    self._room.notify_all()
                    loads[me] = len(active)
