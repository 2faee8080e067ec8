# -*- test-case-name: tests.test_s3_retention -*-
"""
Push and pull times per tag and per manifest digest for an S3 store, in
Redis, where every instance of the cluster records them and the leader's
collector reads them (C{storage.retention}'s C{mostRecentlyPushedCount},
C{mostRecentlyPulledCount}, C{pushedWithin}, C{pulledWithin}).

One hash per repository, C{tagtimes:<repo>}, with fields C{push:<key>} and
C{pull:<key>} (C{<key>} a tag or a manifest digest) holding seconds since
the epoch.  A write keeps the larger of the stored and the new time (a Lua
script), so instances flushing in any order never move a time back.

 - A pull must not wait for Redis: L{S3TagTimes.pulled} notes the time in
   memory and, at most once per L{FLUSH_INTERVAL}, one pool job writes
   every noted time in one pipeline (one script call per repository).  A
   crash loses at most that interval's pulls.
 - A push is written before the index change that makes the tag visible
   (L{S3TagTimes.pushed} is awaited by the manifest PUT): the collector
   reads a repository's index first and its times after, so a tag it sees
   always has its push time (a tag pushed after it read the index is not
   judged that round, L{zotwist.storage.retention.RepositoryRules.seen}).
   A PUT that then fails leaves a newer push time on the tag's old
   manifest: it stays longer, never shorter.

Redis flushed and rebuilt from the bucket (L{zotwist.storage.s3.rebuild})
has no times: as on local storage (L{zotwist.storage.tagtimes}, a journal
without the tag), a tag without a push time counts as pushed when its
manifest was last written or used (the object's C{LastModified}, or a later
use noted in C{touched:<repo>}), and a tag without a pull time as never
pulled.
"""

import time

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from zotwist.storage.tagtimes import flushLast, later, merge

#: Seconds between pull-time writes (pulls within one are coalesced).
FLUSH_INTERVAL = 1.0

_PUSH = "push:"
_PULL = "pull:"

#: KEYS[1]: the repository's hash; ARGV: field, time, field, time, ...
#: Sets each field to the larger of its value and the given time.
_LATER = """
for i = 1, #ARGV, 2 do
    local current = redis.call('HGET', KEYS[1], ARGV[i])
    if not current or tonumber(current) < tonumber(ARGV[i + 1]) then
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
end
return 0
"""

#: KEYS[1]: the repository's hash; ARGV: field, time, ...  Deletes each
#: field still holding exactly that time (one a push or pull since changed
#: stays).  Answers how many went.
_FORGET = """
local gone = 0
for i = 1, #ARGV, 2 do
    local current = redis.call('HGET', KEYS[1], ARGV[i])
    if current and tonumber(current) == tonumber(ARGV[i + 1]) then
        redis.call('HDEL', KEYS[1], ARGV[i])
        gone = gone + 1
    end
end
return gone
"""


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parseTimes(fields: dict) -> dict:
    """
    The C{{key: (pushed, pulled)}} a C{tagtimes:<repo>} hash holds
    (C{HGETALL}'s answer); unreadable fields are skipped.
    """
    found: dict[str, list] = {}
    for field, value in fields.items():
        field = _text(field)
        if not field.startswith((_PUSH, _PULL)):
            continue
        try:
            when = float(_text(value))
        except ValueError:
            continue
        if field.startswith(_PUSH):
            merge(found, field[len(_PUSH):], when, None)
        else:
            merge(found, field[len(_PULL):], None, when)
    return {k: tuple(v) for k, v in found.items()}


def timeFields(times: dict) -> dict:
    """
    The hash fields of C{{key: (pushed, pulled)}} (the inverse of
    L{parseTimes}), times as exact decimal strings.
    """
    fields = {}
    for key, (pushed, pulled) in times.items():
        if pushed is not None:
            fields[_PUSH + key] = repr(float(pushed))
        if pulled is not None:
            fields[_PULL + key] = repr(float(pulled))
    return fields


class S3TagTimes:
    """
    The push and pull times of an S3 store's repositories, shared through
    Redis.

    @param redis: the store's L{zotwist.coordination.client.RedisClient}.
    @param reactor: schedules the coalesced pull writes.
    @ivar clock: returns the current time in seconds since the epoch
        (tests set it to record at chosen times).
    """

    _log = Logger()

    def __init__(self, redis, reactor, clock=time.time, interval: float = FLUSH_INTERVAL):
        self._redis = redis
        self._reactor = reactor
        self.clock = clock
        self._interval = interval
        # repository -> key -> pull time, not written yet
        self._pending: dict[str, dict[str, float]] = {}
        self._call = None
        self._flushing = None
        self._stopped = False

    def key(self, repository: str) -> str:
        return self._redis.key("tagtimes", repository)

    # -- recording -------------------------------------------------------------------

    async def pushed(self, repository: str, keys, when: float | None = None) -> None:
        """
        The manifest known by C{keys} (its tags and digest) is being pushed:
        written now, before the index change (see the module docstring).
        """
        when = self.clock() if when is None else when
        fields = timeFields({k: (when, None) for k in keys})
        if fields:
            await self._redis.run(self._write, {repository: fields})

    def pulled(self, repository: str, keys, when: float | None = None) -> None:
        """
        The manifest known by C{keys} was pulled: noted in memory, written
        with the other pulls of the next L{FLUSH_INTERVAL}.
        """
        when = self.clock() if when is None else when
        pending = self._pending.setdefault(repository, {})
        for key in keys:
            pending[key] = later(pending.get(key), when)
        if self._call is None and self._flushing is None and not self._stopped:
            self._call = self._reactor.callLater(self._interval, self._tick)

    def _tick(self) -> None:
        self._call = None
        self._flushing = d = ensureDeferred(self.flush())

        def done(result):
            self._flushing = None
            if self._pending and not self._stopped:
                self._call = self._reactor.callLater(self._interval, self._tick)
            return result

        d.addErrback(
            lambda f: self._log.error("retention: writing pull times failed: {e}", e=f.value)
        )
        d.addBoth(done)

    async def flush(self) -> int:
        """
        Write the pull times noted so far.

        @return: how many keys were written.
        """
        pending, self._pending = self._pending, {}
        batches = {
            repository: timeFields({k: (None, when) for k, when in keys.items()})
            for repository, keys in pending.items()
            if keys
        }
        if not batches:
            return 0
        try:
            await self._redis.run(self._write, batches)
        except BaseException:
            # Not written: noted again, for the next flush.
            for repository, keys in pending.items():
                mine = self._pending.setdefault(repository, {})
                for key, when in keys.items():
                    mine[key] = later(mine.get(key), when)
            raise
        return sum(len(keys) for keys in pending.values())

    def _write(self, r, batches: dict) -> None:
        """
        Blocking: one pipeline of L{_LATER} calls, one per repository.
        """
        pipe = r.pipeline(transaction=False)
        for repository, fields in batches.items():
            args = [item for pair in fields.items() for item in pair]
            pipe.eval(_LATER, 1, self.key(repository), *args)
        pipe.execute()

    # -- reading -------------------------------------------------------------------

    async def times(self, repository: str) -> dict:
        """
        @return: C{{key: (pushed, pulled)}} of the repository's tags and
            manifest digests: what Redis holds, with this instance's pulls
            not written yet.
        """
        stored = await self._redis.run(lambda r: r.hgetall(self.key(repository)))
        times = {k: list(v) for k, v in parseTimes(stored).items()}
        for key, when in self._pending.get(repository, {}).items():
            merge(times, key, None, when)
        return {k: tuple(v) for k, v in times.items()}

    async def forget(self, repository: str, times: dict) -> int:
        """
        Drop the times of keys that no longer name anything (C{{key:
        (pushed, pulled)}} as L{times} read them); a time that changed
        since stays.

        @return: how many fields went.
        """
        fields = timeFields(times)
        if not fields:
            return 0
        args = [item for pair in fields.items() for item in pair]
        return int(await self._redis.run(
            lambda r: r.eval(_FORGET, 1, self.key(repository), *args)
        ))

    # -- lifecycle -----------------------------------------------------------------

    async def stop(self) -> None:
        """
        Write what is left; no more timed writes.
        """
        self._stopped = True
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        await flushLast(
            self._flushing, self.flush, self._log, "retention: writing pull times failed: {e}"
        )

    def start(self) -> None:
        """
        Allow timed writes again (after L{stop}).
        """
        self._stopped = False


__all__ = ["S3TagTimes", "FLUSH_INTERVAL", "parseTimes", "timeFields"]
