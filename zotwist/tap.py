# -*- test-case-name: tests.test_plugin -*-
"""
C{twistd zot --config FILE}: options and the service tree.

The plugin in C{twisted/plugins/zot_plugin.py} points here.  L{Options}
loads and validates the zot config file before twistd daemonizes, so a bad
config ends with one line naming the file and key, never a traceback.
L{makeServiceFromConfig} builds the same service for twistd and for tests.

The tree, in start order (it stops in the reverse order, one service after
the other, so the HTTP port drains before the thread pool stops):

  - C{logs}: L{zotwist.logs.LogService} (C{log.level}, C{log.output});
  - C{threads-disk}: the disk thread pool;
  - C{store}: L{zotwist.service.StoreService} (scans the storage root, or
    on S3 makes sure Redis holds the state; see L{buildStores});
  - C{gc} (C{storage.gc}): L{zotwist.storage.gc.GarbageCollectionService},
    and C{gc /prefix} per C{storage.subPaths} entry with C{gc};
    C{threads-scrub} and C{scrub} (and C{scrub /prefix}) (C{extensions.scrub}):
    L{zotwist.storage.scrub.ScrubService}; on S3 instead the leader lease,
    the GC under L{zotwist.coordination.lease.LeaderOnly} and the scrub
    (L{zotwist.storage.s3.scrub.S3ScrubService}, checking the lease)
    (L{_addClusterLifecycleServices});
  - C{ops}: L{zotwist.ops.wiring.OperationsService}, holding what the
    site's operational endpoints use (health checks, metrics);
  - C{http}: L{zotwist.service.HTTPService} on a L{RegistrySite} carrying
    the operational endpoints (L{zotwist.ops.wiring});
  - C{reload}: L{zotwist.ops.reload.ReloadService}; its C{settings} (a
    L{zotwist.ops.reload.ReloadableSettings}) is where code that applies
    config changes live subscribes (C{http.auth}, C{http.accessControl});
  - C{signals} (under twistd only): C{SIGHUP} reloads, C{SIGTERM} stops
    gracefully with exit status 0.
"""

import os

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from zotwist import oci
from zotwist.auth.authenticator import (
    authenticationConfigured,
    buildAuthenticator,
    buildTLSOptions,
    checkSecurityConfig,
)
from zotwist.auth.authenticator import buildAuthorizer as buildDefaultAuthorizer
from zotwist.auth.authorizer import buildAuthorizer
from zotwist.auth.bearer import bearerKeysFromConfig, buildBearerAuthenticator
from zotwist.auth.policy import AccessPolicy
from zotwist.config import ConfigError, loadConfig
from zotwist.logs import LogService
from zotwist.memory import tuneAllocator
from zotwist.ops.drain import DRAIN_TIMEOUT
from zotwist.ops.lifecycle import OrderedMultiService, SignalHandlers, notifySystemd
from zotwist.ops.reload import ReloadableSettings, ReloadService
from zotwist.ops.wiring import OperationsService, installOperations
from zotwist.service import HTTPService, StoreService
from zotwist.storage.gc import GarbageCollectionService, GarbageCollector
from zotwist.storage.local import LocalStore
from zotwist.storage.routed import RoutedStore
from zotwist.storage.scrub import ScrubService
from zotwist.threads import ThreadPoolRunner
from zotwist.web.audit import buildAuditLog
from zotwist.web.ratelimit import buildRateLimiter
from zotwist.web.site import RegistrySite
from zotwist.workers import WorkerPool

_log = Logger()


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds >= 0:
        raise ValueError(value)
    return seconds


class Options(usage.Options):
    """
    Command-line options of C{twistd zot}.
    """

    synopsis = "[-c FILE] [--drain-timeout SECONDS]"
    longdesc = "Run the zotwist OCI registry with a zot-format JSON config file."
    optParameters = [
        ["config", "c", "/etc/zot/config.json", "The zot JSON configuration file."],
        [
            "drain-timeout", None, DRAIN_TIMEOUT,
            "On SIGTERM, wait at most this many seconds for requests in flight.",
            _seconds,
        ],
    ]

    def postOptions(self) -> None:
        try:
            self["loadedConfig"] = loadConfig(self["config"])
            # Key and certificate files are read now, so that a bad one ends
            # in one line.
            checkSecurityConfig(self["loadedConfig"])
            bearerKeysFromConfig(self["loadedConfig"])
        except ConfigError as e:
            raise usage.UsageError(str(e))


def makeServiceFromConfig(
    config,
    reactor=None,
    signals: bool = False,
    drainTimeout: float = DRAIN_TIMEOUT,
    adoptFD: int | None = None,
    isWorker: bool = False,
) -> MultiService:
    """
    Build the registry's service tree from a loaded L{zotwist.config.Config}.

    @param signals: install the C{SIGHUP} and C{SIGTERM} handlers (twistd
        does; tests that run the service inside their own process do not).
    @param drainTimeout: how long a stop waits for requests in flight.
    @param adoptFD: in a worker process, the inherited listening socket.
    @param isWorker: this is an extra worker (it starts no workers itself).
    """
    if reactor is None:
        from twisted.internet import reactor
    tuneAllocator()
    oci.sha256Backend()  # say in the log how pushes will be hashed
    top = OrderedMultiService()
    settings = ReloadableSettings(config)
    logs = LogService(config)
    logs.setServiceParent(top)
    settings.subscribe(("log.level", "log.output"), apply=lambda new, old: logs.applyConfig(new))
    runner = ThreadPoolRunner(reactor, minThreads=2, maxThreads=16, name="disk")
    runner.setServiceParent(top)
    uploads = ThreadPoolRunner(reactor, minThreads=0, maxThreads=16, name="upload", niceness=5)
    uploads.setServiceParent(top)
    store, roots = buildStores(config, runner, uploads, reactor)
    storeService = StoreService(store)
    storeService.setServiceParent(top)
    lifecycle = _addLifecycleServices(top, config, store, roots, runner, reactor, isWorker)
    _reloadLifecycle(settings, lifecycle)
    # Downloads by sendfile hold a thread each for their duration: their own
    # pool, so they never starve the disk work of uploads and manifests.
    sender = ThreadPoolRunner(reactor, minThreads=0, maxThreads=32, name="send")
    sender.setServiceParent(top)
    tlsOptions = buildTLSOptions(config)
    authPool = ThreadPoolRunner(reactor, minThreads=0, maxThreads=4, name="auth")
    authPool.setServiceParent(top)
    authenticator = buildAuthenticator(config, reactor, authPool)
    bearer = buildBearerAuthenticator(
        config,
        reactor,
        fallback=authenticator if authenticationConfigured(config) else None,
    )
    audit = buildAuditLog(config, reactor)
    if audit is not None:
        audit.setServiceParent(top)  # opened before the port is
        logs.addReopenHook(audit.reopen)  # rotated with the log on SIGHUP
    authorizer = buildAuthorizer(config, store)
    if authorizer is not None and config.http.accessControl is not None:
        _reloadAccessControl(settings, authorizer)
    site = RegistrySite(
        store,
        bearer or authenticator,
        authorizer or buildDefaultAuthorizer(config),
        limiter=buildRateLimiter(config, reactor),
        audit=audit,
        sender=sender,
        redirectBlobs=config.storage.redirectBlobURL,
    )
    operations = installOperations(
        site, config, store, storeService, runner, reactor, logs
    )
    OperationsService(operations, storeService).setServiceParent(top)
    if operations.metrics is not None:
        for service in lifecycle:
            service = getattr(service, "child", service)  # under LeaderOnly
            if isinstance(service, GarbageCollectionService):
                service.collector.onRound = operations.metrics.collected
            else:
                service.onProblems = operations.metrics.scrubbed
    http = HTTPService(
        reactor, site, config.http.address, config.http.port, storeService, tlsOptions,
        adoptFD=adoptFD, drainTimeout=drainTimeout,
    )
    http.setServiceParent(top)
    if not isWorker:
        http.whenListening().addCallbacks(lambda port: notifySystemd("READY=1"), lambda f: None)
    if config.http.workers > 1 and not isWorker:
        WorkerPool(reactor, config.source, config.http.workers - 1, http).setServiceParent(top)
    reload = ReloadService(settings, logs)
    reload.setServiceParent(top)
    if signals:
        handlers = SignalHandlers(
            reactor,
            reload=reload.reload,
            abort=site.connections.abortAll,
            healthChecks=operations.health,
        )
        handlers.setServiceParent(top)
    return top


def buildStores(config, runner, uploads, reactor):
    """
    The store C{storage.storageDriver} names: S3 with Redis
    (L{zotwist.storage.s3.store.S3Store}, imported only then, so that a
    local registry never needs boto3 or redis-py), or the local stores of
    L{buildLocalStores}.

    @return: C{(store, roots)} as L{buildLocalStores} returns them;
        C{roots} is empty on S3.
    """
    if config.storage.s3 is not None:
        from zotwist.storage.s3.store import S3Store

        # zot's local rootDirectory, which /readyz checks is writable; on S3
        # it holds no repository, and nothing else would create it.
        os.makedirs(config.storage.rootDirectory, exist_ok=True)
        return S3Store.fromConfig(config.storage, runner, reactor), []
    return buildLocalStores(config, runner, uploads, reactor)


def buildLocalStores(config, runner, uploads, reactor):
    """
    The store of C{storage.rootDirectory} and one per C{storage.subPaths}
    entry, each with its own root, C{dedupe} and C{commit}.

    @return: C{(store, roots)}: the store the site serves (a
        L{zotwist.storage.routed.RoutedStore} when there are sub-paths), and
        C{(name, LocalStore, settings)} per root for the lifecycle services,
        C{settings} being the C{storage} section or the sub-path's entry
        (both carry C{gc}, C{gcDelay}, C{gcInterval}, C{gcTimeWindow},
        C{retention}).
    """

    def local(settings):
        return LocalStore(
            settings.rootDirectory,
            runner,
            commit=settings.commit,
            reactor=reactor,
            uploadRunner=uploads,
            dedupe=settings.dedupe,
        )

    default = local(config.storage)
    roots = [("", default, config.storage)]
    routes = {}
    for prefix, settings in sorted(config.storage.subPaths.items()):
        routes[prefix] = local(settings)
        roots.append((prefix, routes[prefix], settings))
    if not routes:
        return default, roots
    return RoutedStore(default, routes), roots


def _addLifecycleServices(top, config, store, roots, runner, reactor, isWorker: bool) -> list:
    """
    Garbage collection with retention (C{gc}, C{gcDelay}, C{gcInterval},
    C{gcTimeWindow}, C{retention}) per store root, and scrub
    (C{extensions.scrub}) of every root, run by the first process only:
    workers share its roots.  Every process refreshes the age of the blobs
    its clients use, for the collector.

    @param store: the store the site serves.
    @param roots: C{(name, LocalStore, settings)} from L{buildLocalStores}.
    @return: the services added.
    """
    if config.storage.s3 is not None:
        return _addClusterLifecycleServices(top, config, store, runner, reactor, isWorker)
    added = []
    for _, store, settings in roots:
        if settings.gc:
            store.touchAfter = settings.gcDelay / 2
    if isWorker:
        return added
    for name, store, settings in roots:
        if settings.gc:
            collector = GarbageCollector(store, runner, settings.gcDelay,
                                         retention=settings.retention)
            gc = GarbageCollectionService(collector, settings.gcInterval, reactor,
                                          window=settings.gcTimeWindow)
            if name:
                gc.setName(f"gc {name}")
            gc.setServiceParent(top)
            added.append(gc)
    extensions = config.extensions
    scrub = extensions.scrub if extensions is not None else None
    if scrub is not None and scrub.enable:
        scrubRunner = ThreadPoolRunner(reactor, minThreads=0, maxThreads=1, name="scrub")
        scrubRunner.setServiceParent(top)
        for name, store, _ in roots:
            scrubService = ScrubService(store, scrubRunner, scrub.interval, reactor=reactor)
            if name:
                scrubService.setName(f"scrub {name}")
            scrubService.setServiceParent(top)
            added.append(scrubService)
    return added


def _addClusterLifecycleServices(top, config, store, runner, reactor, isWorker: bool) -> list:
    """
    On S3 the instances of a cluster share one store: its background work
    runs once across the cluster, on the instance holding the leader lease
    in Redis (L{zotwist.coordination.lease}); another instance takes the
    lease, and the work, when the leader dies.  GC runs under
    L{LeaderOnly}, started when this instance gains the lease and stopped
    when it loses it.  Scrub (L{zotwist.storage.s3.scrub}) runs on every
    instance's timer but checks the lease each round and between
    repositories, so only the leader's rounds do any work.  Extra workers
    (C{http.workers}) are instances like any other but do not compete for
    the lease: their first process does.

    @return: the services added (L{LeaderOnly} wrappers, the scrub).
    """
    from zotwist.coordination.lease import LeaderOnly
    from zotwist.storage.s3.gc import S3GarbageCollector
    from zotwist.storage.s3.scrub import S3ScrubService

    added = []
    storage = config.storage
    extensions = config.extensions
    scrub = extensions.scrub if extensions is not None else None
    if storage.gc:
        store.touchAfter = storage.gcDelay / 2
    if isWorker:
        return added
    scrubbing = scrub is not None and scrub.enable
    if not storage.gc and not scrubbing:
        return added
    lease = store.leaderLease()
    lease.setServiceParent(top)
    if scrubbing:
        scrubRunner = ThreadPoolRunner(reactor, minThreads=0, maxThreads=1, name="scrub")
        scrubRunner.setServiceParent(top)
        scrubService = S3ScrubService(
            store, scrubRunner, scrub.interval, lease=lease, reactor=reactor
        )
        scrubService.setServiceParent(top)
        added.append(scrubService)
    if not storage.gc:
        return added
    # The collector checks the lease itself too, between repositories.
    collector = S3GarbageCollector(store, storage.gcDelay, lease=lease,
                                   retention=storage.retention)
    gc = LeaderOnly(
        lease,
        GarbageCollectionService(
            collector, storage.gcInterval, reactor, window=storage.gcTimeWindow
        ),
    )
    gc.setServiceParent(top)
    added.append(gc)
    return added


def _reloadLifecycle(settings, services) -> None:
    """
    Let C{SIGHUP} change C{storage.retention} and C{storage.gcTimeWindow}
    of the default root live, from the collector's next repository on
    (when its collector runs: the local one, or the S3 one under
    L{LeaderOnly}, whose every instance gets the new config, so the next
    leader has it too; other storage keys need a restart).
    """
    unwrapped = [getattr(s, "child", s) for s in services]  # GC under LeaderOnly
    gc = next((s for s in unwrapped
               if isinstance(s, GarbageCollectionService) and s.name == "gc"), None)
    if gc is None:
        return

    def apply(new, old):
        gc.collector.retention = new.storage.retention
        gc.setWindow(new.storage.gcTimeWindow)

    settings.subscribe(("storage.retention", "storage.gcTimeWindow"), apply=apply)


def _reloadAccessControl(settings, authorizer) -> None:
    """
    Let C{SIGHUP} change C{http.accessControl} live.  Adding or removing the
    whole section changes which authorizer runs, which needs a restart: such
    a reload is refused and the old config stays (never open by accident).
    """

    def prepare(new):
        if new.http.accessControl is None:
            raise ConfigError(
                new.source, "http.accessControl", "cannot be removed without a restart"
            )
        AccessPolicy(new.http.accessControl)

    def apply(new, old):
        authorizer.setPolicy(AccessPolicy(new.http.accessControl))

    settings.subscribe(("http.accessControl",), apply=apply, prepare=prepare)


def makeService(options: Options) -> MultiService:
    """
    twistd's entry point: the service for the config L{Options} loaded,
    with the signal handlers.
    """
    return makeServiceFromConfig(
        options["loadedConfig"], signals=True, drainTimeout=options["drain-timeout"]
    )


__all__ = ["Options", "makeService", "makeServiceFromConfig"]
