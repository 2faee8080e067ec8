"""
Tests for L{zotwist.ops.metrics}: C{extensions.metrics} through a running
registry, scraped after known traffic.
"""

import os

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.apihelpers import (
    OCI_MANIFEST,
    OCTET,
    digestOf,
    pushBlob,
    pushImage,
    startUpload,
    withQuery,
)
from tests.procsupport import StreamingBody
from tests.support import startRegistry
from zotwist.ops.access import RequestSummary
from zotwist.ops.metrics import RegistryMetrics, storageStatistics

METRICS = {"extensions": {"metrics": {"enable": True, "prometheus": {"path": "/metrics"}}}}


def samples(text: str) -> dict:
    """
    Parse an exposition into C{{(name, frozenset(labels)): value}}.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    """
    The value of one sample, 0 when absent (a counter never incremented).
    """
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(reg, path: str = "/metrics") -> dict:
    """
    GET the metrics and parse them.
    """
    resp = await reg.client.get(reg.url + path)
    text = (await treq.content(resp)).decode("utf-8")
    if resp.code != 200:
        raise AssertionError(f"GET {path}: {resp.code}: {text[:500]}")
    return samples(text)


def metricsOf(reg) -> RegistryMetrics:
    """
    The L{RegistryMetrics} of a running registry.
    """
    return reg.service.getServiceNamed("ops").operations.metrics


class ScrapeTests(TestCase):
    """
    Known traffic, then exact counts.
    """

    async def test_requestCounts(self):
        """
        Each request is counted once under its method, route name and
        status; the scrape itself is not counted in its own answer; a path
        nothing answers is counted under C{unmatched}, never its raw path.
        """
        reg = await startRegistry(self, METRICS)
        before = await scrape(reg)
        for _ in range(3):
            await (await reg.client.get(reg.url + "/v2/")).content()
        await (await reg.client.get(reg.url + "/v2/nosuchrepo/tags/list")).content()
        await (await reg.client.get(reg.url + "/no/such/thing/42")).content()
        await (await reg.client.delete(reg.url + "/v2/_catalog")).content()
        await (await reg.client.get(reg.url + "/livez")).content()
        after = await scrape(reg)

        def delta(**labels):
            name = "zot_http_requests_total"
            return value(after, name, **labels) - value(before, name, **labels)

        self.assertEqual(delta(method="GET", route="base", code="200"), 3)
        self.assertEqual(delta(method="GET", route="tags", code="404"), 1)
        self.assertEqual(delta(method="GET", route="unmatched", code="404"), 1)
        self.assertEqual(delta(method="DELETE", route="catalog", code="405"), 1)
        self.assertEqual(delta(method="GET", route="livez", code="200"), 1)
        self.assertEqual(delta(method="GET", route="metrics", code="200"), 1)
        routes = {dict(labels).get("route") for (name, labels) in after if "route" in dict(labels)}
        self.assertFalse(any("/" in route for route in routes), routes)
        self.assertEqual(
            value(after, "zot_http_method_latency_seconds_count", method="GET")
            - value(before, "zot_http_method_latency_seconds_count", method="GET"),
            3 + 1 + 1 + 1 + 1,
        )
        self.assertEqual(
            value(after, "zot_http_route_latency_seconds_count", method="GET", route="base")
            - value(before, "zot_http_route_latency_seconds_count", method="GET", route="base"),
            3,
        )

    async def test_pushesPullsAndBytes(self):
        """
        A manifest push counts one upload for its repository, each manifest
        GET one download (a HEAD none); blob bytes in and out are counted
        under their routes.
        """
        reg = await startRegistry(self, METRICS)
        image = await pushImage(reg, "team/app", "v1", "metrics")
        data = os.urandom(5000)
        digest = await pushBlob(reg, "team/app", data)
        before = await scrape(reg)
        for _ in range(2):
            resp = await reg.client.get(
                f"{reg.url}/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST}
            )
            self.assertEqual((resp.code, await resp.content()), (200, image.manifest))
        await (await reg.client.head(f"{reg.url}/v2/team/app/manifests/v1")).content()
        resp = await reg.client.get(f"{reg.url}/v2/team/app/blobs/{digest}")
        self.assertEqual(await resp.content(), data)
        location = await startUpload(reg, "team/app")
        other = os.urandom(777)
        resp = await reg.client.put(
            withQuery(location, [("digest", digestOf(other))]), data=other, headers=OCTET

        )
        await resp.content()
        self.assertEqual(resp.code, 201)
        after = await scrape(reg)

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        self.assertEqual(value(after, "zot_repo_uploads_total", repo="team/app"), 1)
        self.assertEqual(delta("zot_repo_downloads_total", repo="team/app"), 2)
        self.assertEqual(delta("zot_http_response_bytes_total", route="blob"), 5000)
        self.assertEqual(delta("zot_http_request_bytes_total", route="upload"), 777)
        self.assertEqual(
            delta("zot_http_requests_total", method="HEAD", route="manifest", code="200"), 1
        )

    async def test_uploadsInFlight(self):
        """
        A PATCH still sending its body is an upload in flight; once it is
        answered, it is not.
        """
        reg = await startRegistry(self, METRICS)
        location = await startUpload(reg, "slow")
        body = StreamingBody([b"x" * 1000] * 6, length=6000, delay=0.15)
        patch = reg.client.patch(
            location, data=body, headers={"Content-Type": ["application/octet-stream"]}
        )
        await body.whenSent(2000)
        during = await scrape(reg)
        self.assertEqual(value(during, "zot_uploads_in_flight"), 1)
        self.assertGreaterEqual(value(during, "zot_http_requests_in_flight"), 2)
        resp = await patch
        await resp.content()
        self.assertEqual(resp.code, 202)
        after = await scrape(reg)
        self.assertEqual(value(after, "zot_uploads_in_flight"), 0)
        self.assertEqual(value(after, "zot_http_requests_in_flight"), 1)

    async def test_storageGauges(self):
        """
        After a storage walk, the gauges give the bytes and blob counts per
        repository and in total; a blob mounted into a second repository
        (a hard link) counts once in the total.
        """
        reg = await startRegistry(self, METRICS)
        first = os.urandom(3000)
        second = os.urandom(1234)
        await pushBlob(reg, "a", first)
        digest = await pushBlob(reg, "a", second)
        resp = await reg.client.post(
            f"{reg.url}/v2/b/blobs/uploads/?mount={digest}&from=a", data=b""
        )
        await resp.content()
        self.assertEqual(resp.code, 201)
        await metricsOf(reg).refreshStorage()
        found = await scrape(reg)
        self.assertEqual(value(found, "zot_repo_storage_bytes", repo="a"), 4234)
        self.assertEqual(value(found, "zot_repo_blobs", repo="a"), 2)
        self.assertEqual(value(found, "zot_repo_storage_bytes", repo="b"), 1234)
        self.assertEqual(value(found, "zot_storage_bytes"), 4234)
        self.assertEqual(value(found, "zot_storage_blobs"), 2)
        self.assertGreater(value(found, "zot_storage_scan_timestamp_seconds"), 0)

    async def test_disabled(self):
        """
        Without C{extensions.metrics} (or with C{enable: false}) there is no
        metrics endpoint: C{/metrics} is a 404 like any unknown path.
        """
        for config in ({}, {"extensions": {"metrics": {"enable": False}}}):
            reg = await startRegistry(self, config)
            resp = await reg.client.get(reg.url + "/metrics")
            await resp.content()
            self.assertEqual(resp.code, 404)
            self.assertIsNone(metricsOf(reg))

    async def test_customPath(self):
        """
        C{prometheus.path} moves the endpoint (nested paths too); the
        default path is then not answered.
        """
        reg = await startRegistry(
            self, {"extensions": {"metrics": {"prometheus": {"path": "/ops/prom"}}}}
        )
        found = await scrape(reg, "/ops/prom")
        self.assertIn(("zot_storage_blobs", frozenset()), found)
        resp = await reg.client.get(reg.url + "/metrics")
        await resp.content()
        self.assertEqual(resp.code, 404)

    async def test_openMetrics(self):
        """
        A scraper that asks for OpenMetrics gets it.
        """
        reg = await startRegistry(self, METRICS)
        resp = await reg.client.get(
            reg.url + "/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        )
        text = (await resp.content()).decode()
        self.assertTrue(
            resp.headers.getRawHeaders("content-type")[0].startswith(
                "application/openmetrics-text"
            )
        )
        self.assertTrue(text.rstrip().endswith("# EOF"))


class RegistryMetricsTests(SynchronousTestCase):
    """
    The metrics object on its own.
    """

    def summary(self, **kwargs) -> RequestSummary:
        """
        A request summary with defaults.
        """
        fields = dict(
            method="GET", route="manifest", repository="r", status=200, bytesIn=0,
            bytesOut=10, duration=0.01, user=None, path="/v2/r/manifests/t", client=None,
        )
        fields.update(kwargs)
        return RequestSummary(**fields)

    def test_separateRegistries(self):
        """
        Two L{RegistryMetrics} in one process count separately (each has its
        own C{CollectorRegistry}, never the global one).
        """
        one, two = RegistryMetrics(), RegistryMetrics()
        one.observe(self.summary())
        one.observe(self.summary())
        two.observe(self.summary())
        self.assertEqual(
            value(samples(one.render()[0].decode()), "zot_repo_downloads_total", repo="r"), 2
        )
        self.assertEqual(
            value(samples(two.render()[0].decode()), "zot_repo_downloads_total", repo="r"), 1
        )

    def test_onlySuccessfulManifestTrafficCounts(self):
        """
        Pulls are manifest GETs answered 200, pushes manifest PUTs answered
        201; a failed push, a blob GET or a HEAD count neither.
        """
        metrics = RegistryMetrics()
        metrics.observe(self.summary(method="PUT", status=400))
        metrics.observe(self.summary(method="HEAD"))
        metrics.observe(self.summary(route="blob"))
        metrics.observe(self.summary(method="PUT", status=201))
        found = samples(metrics.render()[0].decode())
        self.assertEqual(value(found, "zot_repo_uploads_total", repo="r"), 1)
        self.assertEqual(value(found, "zot_repo_downloads_total", repo="r"), 0)

    def test_storageStatistics(self):
        """
        The walk sums the blobs of each repository and counts hard links
        once in the total; a repository without C{blobs/} counts zero.
        """
        root = self.mktemp()
        for name, blobs in (("a", {"1": 10, "2": 20}), ("x/y", {"3": 5})):
            directory = os.path.join(root, *name.split("/"), "blobs", "sha256")
            os.makedirs(directory)
            for blob, size in blobs.items():
                with open(os.path.join(directory, blob), "wb") as f:
                    f.write(b"z" * size)
        os.link(
            os.path.join(root, "a", "blobs", "sha256", "1"),
            os.path.join(root, "x", "y", "blobs", "sha256", "1"),
        )
        os.makedirs(os.path.join(root, "empty"))
        stats = storageStatistics(root, ["a", "x/y", "empty"])
        self.assertEqual(
            stats["repositories"], {"a": (30, 2), "x/y": (15, 2), "empty": (0, 0)}
        )
        self.assertEqual((stats["bytes"], stats["blobs"]), (35, 3))



class ConfigTests(SynchronousTestCase):
    """
    C{extensions.metrics.prometheus.path} in the config.
    """

    def test_reservedPaths(self):
        """
        The metrics cannot take the path of another operational endpoint.
        """
        from zotwist.config import ConfigError, parseConfig

        for path in ("/livez", "/readyz/", "/openapi.json", "/swagger", "/swagger/x"):
            document = {
                "storage": {"rootDirectory": "/srv/zot"},
                "extensions": {"metrics": {"prometheus": {"path": path}}},
            }
            error = self.assertRaises(ConfigError, parseConfig, document)
            self.assertEqual(error.keyPath, "extensions.metrics.prometheus.path")
        document = {
            "storage": {"rootDirectory": "/srv/zot"},
            "extensions": {"metrics": {"prometheus": {"path": "/livez-metrics"}}},
        }
        self.assertEqual(
            parseConfig(document).extensions.metrics.prometheus.path, "/livez-metrics"
        )
