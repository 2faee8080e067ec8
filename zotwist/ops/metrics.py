# -*- test-case-name: tests.test_ops_metrics -*-
"""
C{extensions.metrics}: Prometheus metrics at C{extensions.metrics.prometheus.path}.

Each L{RegistryMetrics} has a C{CollectorRegistry} of its own (never
C{prometheus_client}'s global one), so several registries can live in one
process, as they do in the tests.  The names follow zot's where zot has one
(C{zot_http_requests_total}, C{zot_http_method_latency_seconds},
C{zot_repo_downloads_total}, C{zot_repo_uploads_total},
C{zot_repo_storage_bytes}, C{zot_info}), so zot's dashboards keep working;
the rest use the same C{zot_} prefix.

Every label set is bounded: methods are the HTTP ones (others count as
C{OTHER}), routes are the route names of L{zotwist.web.routes} and of the
operational endpoints, never raw paths, and repository labels name
repositories that exist (a pull or push that succeeded), as zot does.

Request metrics are updated from the request summaries the site reports
(L{zotwist.ops.access}).  Storage gauges (bytes and blob counts) need a walk
of every repository's C{blobs/}: that walk runs in the disk thread pool,
never on the reactor, and at most once every L{STORAGE_INTERVAL} seconds,
started by a scrape that finds the figures older than that (and once at
start-up).  A scrape never waits for it: it serves the last figures, with
C{zot_storage_scan_timestamp_seconds} saying how old they are.
"""

import os
import platform
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from zotwist import DIST_SPEC_VERSION, __version__
from zotwist.ops.access import RequestSummary
from zotwist.ops.endpoints import notFound, refuseMethod, sendBody

#: zot's latency buckets (C{GetDefaultBuckets}), for the metric zot has.
ZOT_BUCKETS = (0.05, 0.5, 1, 5, 30, 60, 600)
#: Finer buckets for the per-route latency.
ROUTE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)
#: The storage walk runs at most this often, in seconds.
STORAGE_INTERVAL = 60.0


def storageStatistics(root: str, repositories: list) -> dict:
    """
    Walk the C{blobs/} of every repository.  Blocking: run it in the disk
    pool.

    @return: C{{"repositories": {name: (bytes, blobs)}, "bytes": total,
        "blobs": total}}; the totals count a blob hard-linked into several
        repositories (a cross-repository mount) once.
    """
    perRepository = {}
    seen = set()
    totalBytes = 0
    totalBlobs = 0
    for name in repositories:
        blobs = os.path.join(root, *name.split("/"), "blobs")
        size = count = 0
        try:
            algorithms = list(os.scandir(blobs))
        except OSError:
            algorithms = []
        for algorithm in algorithms:
            if not algorithm.is_dir(follow_symlinks=False):
                continue
            try:
                entries = list(os.scandir(algorithm.path))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                size += st.st_size
                count += 1
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    totalBytes += st.st_size
                    totalBlobs += 1
        perRepository[name] = (size, count)
    return {"repositories": perRepository, "bytes": totalBytes, "blobs": totalBlobs}


class _StorageCollector:
    """
    Serves the last storage figures of a L{RegistryMetrics}, and asks for
    fresh ones when they are old.
    """

    def __init__(self, metrics: "RegistryMetrics"):
        self._metrics = metrics

    def collect(self):
        """
        Yield the storage gauges, starting a fresh walk if the figures are old.
        """
        metrics = self._metrics
        metrics.refreshStorageIfStale()
        stats = metrics.storage
        perRepo = GaugeMetricFamily(
            "zot_repo_storage_bytes", "Bytes of blobs stored per repository", labels=["repo"]
        )
        blobsPerRepo = GaugeMetricFamily(
            "zot_repo_blobs", "Blobs stored per repository", labels=["repo"]
        )
        if stats is not None:
            for name, (size, count) in sorted(stats["repositories"].items()):
                perRepo.add_metric([name], size)
                blobsPerRepo.add_metric([name], count)
        yield perRepo
        yield blobsPerRepo
        yield GaugeMetricFamily(
            "zot_storage_bytes",
            "Bytes of blobs in the storage root (hard-linked blobs counted once)",
            value=stats["bytes"] if stats else 0,
        )
        yield GaugeMetricFamily(
            "zot_storage_blobs",
            "Blobs in the storage root (hard-linked blobs counted once)",
            value=stats["blobs"] if stats else 0,
        )
        yield GaugeMetricFamily(
            "zot_storage_scan_timestamp_seconds",
            "When the storage figures were gathered (0: not yet)",
            value=metrics.storageGatheredAt or 0,
        )
        yield GaugeMetricFamily(
            "zot_storage_scan_duration_seconds",
            "How long gathering the storage figures took",
            value=metrics.storageScanDuration or 0,
        )

    def describe(self):
        """
        Nothing to describe ahead of time: the families come from L{collect}.
        """
        return []


class RegistryMetrics:
    """
    The registry's Prometheus metrics.

    @param store: the store, for the repository list and its root (storage
        gauges); L{None} to leave them empty.
    @param runner: the L{zotwist.threads.IBlockingRunner} the storage walk
        runs in.
    @param connections: the site's L{zotwist.ops.drain.ConnectionTracker},
        for the in-flight gauges.
    @param clock: an C{IReactorTime}, for the storage interval.
    @ivar registry: the C{CollectorRegistry} holding everything.
    @ivar storage: the last storage figures (see L{storageStatistics}), or
        L{None} before the first walk.
    """

    _log = Logger()

    def __init__(self, store=None, runner=None, connections=None, clock=None,
                 storageInterval: float = STORAGE_INTERVAL):
        self._store = store
        self._runner = runner
        self._clock = clock
        self._storageInterval = storageInterval
        self._refreshing: Deferred | None = None
        self._refreshStarted: float | None = None
        self.storage = None
        self.storageGatheredAt: float | None = None
        self.storageScanDuration: float | None = None
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "zot_http_requests", "HTTP requests answered, by method, route and status",
            ["method", "route", "code"], registry=registry,
        )
        self.methodLatency = Histogram(
            "zot_http_method_latency_seconds", "Latency of serving HTTP requests, by method",
            ["method"], buckets=ZOT_BUCKETS, registry=registry,
        )
        self.routeLatency = Histogram(
            "zot_http_route_latency_seconds",
            "Latency of serving HTTP requests, by method and route",
            ["method", "route"], buckets=ROUTE_BUCKETS, registry=registry,
        )
        self.bytesIn = Counter(
            "zot_http_request_bytes", "Request body bytes received, by route",
            ["route"], registry=registry,
        )
        self.bytesOut = Counter(
            "zot_http_response_bytes", "Response body bytes sent, by route",
            ["route"], registry=registry,
        )
        self.downloads = Counter(
            "zot_repo_downloads", "Manifests pulled (GET answered 200), by repository",
            ["repo"], registry=registry,
        )
        self.uploads = Counter(
            "zot_repo_uploads", "Manifests pushed (PUT answered 201), by repository",
            ["repo"], registry=registry,
        )
        inFlight = Gauge(
            "zot_http_requests_in_flight", "Requests received and not yet answered",
            registry=registry,
        )
        uploadsInFlight = Gauge(
            "zot_uploads_in_flight", "Requests writing a blob upload to disk right now",
            registry=registry,
        )
        if connections is not None:
            inFlight.set_function(lambda: len(connections.requestsInFlight()))
            uploadsInFlight.set_function(connections.uploadsInFlight)
        info = Gauge(
            "zot_info", "Server information",
            ["version", "binaryType", "distSpecVersion", "pythonVersion"], registry=registry,
        )
        info.labels(__version__, "zotwist", DIST_SPEC_VERSION, platform.python_version()).set(0)
        registry.register(_StorageCollector(self))
        self.scrubProblems = Gauge(
            "zot_scrub_problems", "Damage the last complete scrub found, by kind",
            ["kind"], registry=registry,
        )
        self.scrubRounds = Counter(
            "zot_scrub_rounds", "Complete scrub rounds", registry=registry,
        )
        self.gcRemoved = Counter(
            "zot_gc_removed", "What garbage collection removed, by kind",
            ["kind"], registry=registry,
        )
        self.gcRemovedBytes = Counter(
            "zot_gc_removed_bytes", "Blob bytes garbage collection freed", registry=registry,
        )

    def scrubbed(self, problems) -> None:
        """
        Record a complete scrub round's problems (L{zotwist.storage.scrub.Problem}).
        """
        from zotwist.storage.scrub import PROBLEM_KINDS

        counts = dict.fromkeys(PROBLEM_KINDS, 0)
        for problem in problems:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        for kind, count in counts.items():
            self.scrubProblems.labels(kind).set(count)
        self.scrubRounds.inc()

    def collected(self, result) -> None:
        """
        Count what one collection removed (L{zotwist.storage.gc.CollectionResult}).
        """
        self.gcRemoved.labels("manifests").inc(len(result.manifests))
        self.gcRemoved.labels("blobs").inc(len(result.blobs))
        self.gcRemoved.labels("uploads").inc(result.uploads)
        self.gcRemovedBytes.inc(result.bytes)

    def observe(self, summary: RequestSummary) -> None:
        """
        Count one finished request.
        """
        route = summary.route
        self.requests.labels(summary.method, route, str(summary.status)).inc()
        self.methodLatency.labels(summary.method).observe(summary.duration)
        self.routeLatency.labels(summary.method, route).observe(summary.duration)
        if summary.bytesIn:
            self.bytesIn.labels(route).inc(summary.bytesIn)
        if summary.bytesOut:
            self.bytesOut.labels(route).inc(summary.bytesOut)
        if summary.repository is not None and route == "manifest":
            if summary.method == "GET" and summary.status == 200:
                self.downloads.labels(summary.repository).inc()
            elif summary.method == "PUT" and summary.status == 201:
                self.uploads.labels(summary.repository).inc()

    __call__ = observe

    # -- storage --------------------------------------------------------------

    def refreshStorage(self) -> Deferred:
        """
        Gather the storage figures now (in the disk pool), unless a walk is
        already running; either way the result fires when the figures are
        fresh.  Failures are logged, never raised.
        """
        if self._store is None or self._runner is None:
            return succeed(None)
        if self._refreshing is not None:
            waiter: Deferred = Deferred()
            self._refreshing.addBoth(lambda result: (waiter.callback(None), result)[1])
            return waiter
        self._refreshStarted = self._now()
        d = ensureDeferred(self._gather())

        def failed(failure):
            self._log.failure("Gathering storage metrics failed", failure)

        def done(result):
            self._refreshing = None
            return result

        d.addErrback(failed)
        d.addBoth(done)
        self._refreshing = d
        waiter = Deferred()
        d.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter

    async def _gather(self) -> None:
        names = await self._store.catalog()
        started = time.monotonic()
        stats = await self._runner.run(storageStatistics, self._store.root, names)
        self.storageScanDuration = time.monotonic() - started
        self.storage = stats
        self.storageGatheredAt = time.time()

    def refreshStorageIfStale(self) -> None:
        """
        Start a walk if the last one started more than the interval ago.
        """
        if self._refreshing is not None:
            return
        last = self._refreshStarted
        if last is None or self._now() - last >= self._storageInterval:
            self.refreshStorage()

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else time.monotonic()

    # -- exposition -----------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """
        @return: the exposition text and its content type, as C{Accept}
            asks (Prometheus text or OpenMetrics).
        """
        encoder, contentType = choose_encoder(accept)
        return encoder(self.registry), contentType


class MetricsResource(Resource):
    """
    The scrape endpoint.
    """

    isLeaf = True

    def __init__(self, metrics: RegistryMetrics):
        super().__init__()
        self._metrics = metrics

    def render(self, request):
        request.opsRoute = "metrics"
        """
        Answer a scrape with the exposition the C{Accept} header asks for.
        """
        if request.postpath not in ([], [b""]):
            return notFound(request)
        if refuseMethod(request, ("GET",)):
            return NOT_DONE_YET
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        body, contentType = self._metrics.render(accept)
        return sendBody(request, body, contentType.encode("latin-1"))


__all__ = ["RegistryMetrics", "MetricsResource", "storageStatistics", "STORAGE_INTERVAL"]
