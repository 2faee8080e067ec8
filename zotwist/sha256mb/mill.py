# -*- test-case-name: tests.test_sha256mb -*-
"""
The combining scheduler: streams from many threads hashed together.

Each upload thread hands its stream's whole blocks to L{Mill.run} and blocks.
Whichever thread finds no round running becomes the leader: it puts every
stream with pending work into the kernel's lanes (up to eight at once) and
hashes them together, a bounded share per lane per round so lanes stay
evenly busy and a stream that arrives mid-way joins at the next round.  The
other threads wait for their own stream to be done.  Under load this batches
by itself, like a group commit: the more uploads run at once, the fuller each
round.  When the leader's own work is done it hands the leadership to a
thread still waiting, so no thread hashes for others for long after its own
request is served.
"""

import ctypes
import threading
from collections import deque

from zotwist.sha256mb.kernel import LANES, Kernel, Lane, LaneArray

#: Bytes per lane per round: small enough that a stream arriving mid-way
#: soon gets a lane, large enough that a round's Python bookkeeping (a few
#: microseconds) is nothing next to its hashing (about a millisecond).
QUANTUM = 256 * 1024


class _Job:
    """
    One thread's request: a lane's worth of segments, and the lock its
    thread sleeps on until the job is done or it is asked to lead.
    """

    __slots__ = ("lane", "pointer", "wake", "done", "error")

    def __init__(self, lane: Lane):
        self.lane = lane
        self.pointer = ctypes.pointer(lane)
        self.wake = threading.Lock()
        self.wake.acquire()
        self.done = False
        self.error: BaseException | None = None


class Mill:
    """
    Hashes lanes from many threads in shared kernel calls.

    @ivar rounds: kernel calls made so far; C{laneRounds}: lanes they
        carried (C{laneRounds / rounds} is the mean batch size).
    """

    def __init__(self, kernel: Kernel, quantum: int = QUANTUM):
        self.kernel = kernel
        self._blocks = max(1, quantum // 64)
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._active: list[_Job] = []
        self._leading = False
        self._lanes = LaneArray()
        self.rounds = 0
        self.laneRounds = 0

    def run(self, lane: Lane) -> None:
        """
        Hash all of C{lane}'s segments into its state.  Blocking; one call at
        a time per stream (as with any hasher, its updates are ordered).
        """
        job = _Job(lane)
        with self._lock:
            self._queue.append(job)
            lead = not self._leading
            self._leading = True
        if not lead:
            job.wake.acquire()
        if not job.done:
            self._lead(job)
        if job.error is not None:
            raise job.error

    def runAlone(self, lane: Lane) -> None:
        """
        Hash C{lane} at once in a kernel call of its own, outside the rounds
        (for a digest's one or two final blocks).  Thread-safe.
        """
        lanes = LaneArray()
        lanes[0] = ctypes.pointer(lane)
        self.kernel.run(lanes, 1)

    def _lead(self, own: _Job) -> None:
        """
        Run rounds until C{own} is done, then pass the leadership on.
        """
        active = self._active
        lanes = self._lanes
        kernel = self.kernel
        single = kernel.single
        blocks = self._blocks
        try:
            while not own.done:
                with self._lock:
                    queue = self._queue
                    while len(active) < LANES and queue:
                        active.append(queue.popleft())
                count = len(active)
                if count == 1 and single is not None:
                    single.run(active[0].lane, blocks)
                else:
                    for i, job in enumerate(active):
                        lanes[i] = job.pointer
                    kernel.run(lanes, count, blocks)
                self.rounds += 1
                self.laneRounds += count
                finished = False
                for job in active:
                    lane = job.lane
                    if lane.index >= lane.count:
                        finished = True
                        job.done = True
                        if job is not own:
                            job.wake.release()
                if finished:
                    active[:] = [job for job in active if not job.done]
        except BaseException as error:
            with self._lock:
                failed = active + list(self._queue)
                active.clear()
                self._queue.clear()
                self._leading = False
            for job in failed:
                job.error = error
                job.done = True
                if job is not own:
                    job.wake.release()
            raise
        with self._lock:
            queue = self._queue
            while len(active) < LANES and queue:
                active.append(queue.popleft())
            if active:
                # Its thread is asleep in run() and not done: it leads next.
                active[0].wake.release()
            else:
                self._leading = False
