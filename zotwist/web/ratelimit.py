# -*- test-case-name: tests.test_ratelimit -*-
"""
C{http.ratelimit}: at most C{rate} requests a second, overall and per method.

zot limits with tollbooth, which keys its buckets by the client's address;
so does this: one client pushing hard does not lock every other client
out.  Each limit is a token bucket holding up to C{rate} requests (the
burst tollbooth allows) and refilling at C{rate} a second.  A request must
find room in both the overall bucket and its method's; when it does not,
it takes nothing from either and is answered 429 TOOMANYREQUESTS with a
C{Retry-After} of the seconds until it would fit.

Time comes from the injected clock (the reactor, or a C{task.Clock} in
tests).  Buckets that have filled up again are forgotten, so the table does
not grow with every address ever seen.
"""

import math

#: Prune full buckets once the table holds this many.
PRUNE_AT = 4096


class TokenBucket:
    """
    A bucket of C{capacity} tokens refilled at C{rate} a second.
    """

    __slots__ = ("rate", "capacity", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float):
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self) -> float:
        """
        Seconds until one token is there (0 when one is now); call
        L{refill} first.
        """
        if self.tokens >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + max(0.0, now - self.updated) * self.rate >= self.capacity


class RateLimiter:
    """
    The configured limits.

    @param config: the L{zotwist.config.RatelimitConfig}; a rate of 0 is
        no limit.
    @param clock: an L{IReactorTime}.
    """

    def __init__(self, config, clock):
        self._clock = clock
        self._rate = config.rate or None
        self._methods = {m.method.upper(): m.rate for m in config.methods if m.rate}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    @property
    def active(self) -> bool:
        return bool(self._rate or self._methods)

    def _bucket(self, key, rate: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, max(1.0, float(rate)), now)
        else:
            bucket.refill(now)
        return bucket

    def check(self, method: str, client: str) -> int | None:
        """
        Count a request, if there is room for it.

        @param method: the HTTP method.
        @param client: the client's address.
        @return: L{None} when the request may go ahead, else the whole
            number of seconds (at least 1) to wait, for C{Retry-After}.
        """
        now = self._clock.seconds()
        buckets = []
        if self._rate:
            buckets.append(self._bucket(("", client), self._rate, now))
        methodRate = self._methods.get(method.upper())
        if methodRate:
            buckets.append(self._bucket((method.upper(), client), methodRate, now))
        wait = max((bucket.wait() for bucket in buckets), default=0.0)
        if wait > 0:
            return max(1, math.ceil(wait))
        for bucket in buckets:
            bucket.tokens -= 1
        if len(self._buckets) >= PRUNE_AT:
            self._prune(now)
        return None

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]


def buildRateLimiter(config, clock) -> RateLimiter | None:
    """
    The limiter for C{http.ratelimit}, or L{None} when there is no limit.
    """
    ratelimit = config.http.ratelimit
    if ratelimit is None:
        return None
    limiter = RateLimiter(ratelimit, clock)
    return limiter if limiter.active else None


__all__ = ["RateLimiter", "TokenBucket", "buildRateLimiter"]
