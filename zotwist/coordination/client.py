# -*- test-case-name: tests.test_redis_client -*-
"""
The one way zotwist talks to Redis: a redis-py client whose blocking calls
run only in a thread pool, and the one place Redis key names are built.

redis-py is synchronous; calling it on the reactor thread would stall every
client while a command crosses the network (and a restarting Redis would
stall them for seconds).  L{RedisClient.run} hands a function the
C{redis.Redis} in a pool thread, so a caller can put several commands (a
pipeline, a WATCH/MULTI transaction, a Lua script) into one thread hop.

Every key of one store lives under one prefix, C{zotwist:{<bucket>/<root>}:}
(L{storePrefix}): several registries can share a Redis, and the braces make
it a Redis Cluster hash tag, so a store's keys stay in one slot and
multi-key transactions keep working there.
"""

from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from twisted.internet.defer import Deferred

from zotwist.threads import IBlockingRunner

#: Seconds a command may wait on the socket before it fails; long enough
#: for a busy server, short enough that a dead one does not hang requests.
SOCKET_TIMEOUT = 10.0


def storePrefix(bucket: str, rootdirectory: str) -> str:
    """
    The key prefix of the store in C{bucket} under C{rootdirectory}.

    >>> storePrefix("regs", "/zot")
    'zotwist:{regs/zot}:'
    """
    root = rootdirectory.strip("/")
    return f"zotwist:{{{bucket}/{root}}}:"


class RedisClient:
    """
    A Redis connection pool used from pool threads only.

    @ivar prefix: the prefix of every key this client builds.
    @ivar redis: the underlying C{redis.Redis}; touch it only inside a
        function given to L{run}.
    """

    def __init__(self, url: str, runner: IBlockingRunner, prefix: str):
        """
        @param url: C{redis://host:port/db} (or C{rediss://}, C{unix://}), as
            zot's C{cacheDriver.url}.
        @param runner: where the blocking calls run.
        @param prefix: see L{storePrefix}.
        """
        self.prefix = prefix
        self._runner = runner
        # A restarted Redis drops every connection: retry a command a few
        # times on a fresh connection rather than failing the request.
        self.redis = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 5),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    def key(self, *parts: str) -> str:
        """
        The full name of a key: the prefix and the parts joined by C{:}, e.g.
        C{key("blobs", "library/alpine")} is C{<prefix>blobs:library/alpine}.
        """
        if not parts:
            raise ValueError("a key needs at least one part")
        return self.prefix + ":".join(parts)

    def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """
        Call C{function(self.redis, *args, **kwargs)} in a pool thread.

        @return: a L{Deferred} firing (on the reactor thread) with its result.
        """
        return self._runner.run(function, self.redis, *args, **kwargs)

    def close(self) -> Deferred:
        """
        Close the pool's connections (in a thread: closing can block).
        """
        return self._runner.run(self.redis.connection_pool.disconnect)
