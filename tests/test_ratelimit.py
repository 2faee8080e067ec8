"""
Tests for L{zotwist.web.ratelimit}: token buckets on a fake clock, and 429
answers over real HTTP.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.accesshelpers import startSite
from tests.apihelpers import assertError, header, status
from zotwist.config import MethodRatelimit, RatelimitConfig, parseConfig
from zotwist.web import ratelimit
from zotwist.web.ratelimit import RateLimiter, buildRateLimiter


def limiter(rate=None, methods=(), clock=None) -> RateLimiter:
    return RateLimiter(
        RatelimitConfig(rate=rate, methods=tuple(MethodRatelimit(m, r) for m, r in methods)),
        clock or Clock(),
    )


class RateLimiterTests(SynchronousTestCase):
    """
    L{RateLimiter.check} on a L{Clock}.
    """

    def test_overall(self):
        """
        C{rate} requests pass at once (the burst), the next waits for a
        token, and tokens come back at C{rate} a second.
        """
        clock = Clock()
        limit = limiter(rate=2, clock=clock)
        self.assertIsNone(limit.check("GET", "10.0.0.1"))
        self.assertIsNone(limit.check("PUT", "10.0.0.1"))
        self.assertEqual(limit.check("GET", "10.0.0.1"), 1)
        clock.advance(0.25)
        self.assertEqual(limit.check("GET", "10.0.0.1"), 1)
        clock.advance(0.25)
        self.assertIsNone(limit.check("GET", "10.0.0.1"))
        self.assertEqual(limit.check("GET", "10.0.0.1"), 1)
        clock.advance(10)
        self.assertIsNone(limit.check("GET", "10.0.0.1"))
        self.assertIsNone(limit.check("GET", "10.0.0.1"))
        self.assertEqual(limit.check("GET", "10.0.0.1"), 1)

    def test_bucket(self):
        """
        L{TokenBucket.wait} says how long until the next token, and
        refilling never goes past the capacity.
        """
        bucket = ratelimit.TokenBucket(0.25, 1, 100.0)
        self.assertEqual(bucket.wait(), 0)
        bucket.tokens -= 1
        self.assertEqual(bucket.wait(), 4)
        bucket.refill(101.0)
        self.assertEqual(bucket.wait(), 3)
        bucket.refill(1000.0)
        self.assertEqual(bucket.tokens, 1)
        self.assertTrue(bucket.full(1000.0))

    def test_perMethod(self):
        """
        A method's own limit applies to that method only (case does not
        matter in the config).
        """
        limit = limiter(methods=[("get", 1)])
        self.assertIsNone(limit.check("GET", "c"))
        self.assertEqual(limit.check("GET", "c"), 1)
        for _ in range(20):
            self.assertIsNone(limit.check("POST", "c"))

    def test_bothLimits(self):
        """
        A request must fit both limits; one refused by its method's limit
        takes nothing from the overall one.
        """
        clock = Clock()
        limit = limiter(rate=3, methods=[("GET", 1)], clock=clock)
        self.assertIsNone(limit.check("GET", "c"))
        for _ in range(5):
            self.assertEqual(limit.check("GET", "c"), 1)
        self.assertIsNone(limit.check("PUT", "c"))
        self.assertIsNone(limit.check("PUT", "c"))
        self.assertEqual(limit.check("PUT", "c"), 1)

    def test_perClient(self):
        """
        Limits count per client address, as zot's tollbooth does: one busy
        client does not hold up another.
        """
        limit = limiter(rate=1)
        self.assertIsNone(limit.check("GET", "10.0.0.1"))
        self.assertEqual(limit.check("GET", "10.0.0.1"), 1)
        self.assertIsNone(limit.check("GET", "10.0.0.2"))

    def test_pruning(self):
        """
        Buckets that have filled up again are dropped once there are many,
        so the table does not grow with every address ever seen.
        """
        self.patch(ratelimit, "PRUNE_AT", 10)
        clock = Clock()
        limit = limiter(rate=1, clock=clock)
        for i in range(9):
            limit.check("GET", f"10.0.0.{i}")
        self.assertEqual(len(limit._buckets), 9)
        clock.advance(5)
        limit.check("GET", "10.0.1.1")
        self.assertEqual(list(limit._buckets), [("", "10.0.1.1")])

    def test_zeroIsNoLimit(self):
        """
        A rate of 0 limits nothing; with nothing to limit there is no
        limiter at all.
        """
        base = {"storage": {"rootDirectory": "/x"}}
        for http in [
            {},
            {"ratelimit": {"rate": 0}},
            {"ratelimit": {"methods": [{"method": "GET", "rate": 0}]}},
        ]:
            self.assertIsNone(buildRateLimiter(parseConfig({**base, "http": http}), Clock()))
        config = parseConfig({**base, "http": {"ratelimit": {"rate": 5}}})
        self.assertIsInstance(buildRateLimiter(config, Clock()), RateLimiter)


class HTTPTests(TestCase):
    """
    Over the limit, the registry answers 429 TOOMANYREQUESTS with
    C{Retry-After}, before doing anything else.
    """

    async def test_429(self):
        """
        Two requests a second: the third is refused until the clock moves.
        """
        clock = Clock()
        site = await startSite(self, limiter=limiter(rate=2, clock=clock))
        url = f"{site.url}/v2/"
        self.assertEqual(await status(site, "GET", url), 200)
        self.assertEqual(await status(site, "GET", f"{site.url}/v2/a/tags/list"), 404)
        resp = await site.client.get(url)
        self.assertEqual(header(resp, "Retry-After"), "1")
        await assertError(resp, 429, "TOOMANYREQUESTS")
        clock.advance(1)
        self.assertEqual(await status(site, "GET", url), 200)

    async def test_methodLimit(self):
        """
        A per-method limit refuses only that method.
        """
        site = await startSite(self, limiter=limiter(methods=[("POST", 1)]))
        url = f"{site.url}/v2/a/blobs/uploads/"
        self.assertEqual(await status(site, "POST", url, data=b""), 202)
        self.assertEqual(await status(site, "POST", url, data=b""), 429)
        self.assertEqual(await status(site, "GET", f"{site.url}/v2/"), 200)
