# -*- test-case-name: tests.test_plugin -*-
"""
C{twistd zot --config FILE}: options and the service tree.

The plugin in C{twisted/plugins/zot_plugin.py} points here.  L{Options}
loads and validates the zot config file before twistd daemonizes, so a bad
config ends with one line naming the file and key, never a traceback.
L{makeServiceFromConfig} builds the same service for twistd and for tests.
"""

from twisted.application.service import MultiService
from twisted.python import usage

from zotwist.auth.authenticator import (
    authenticationConfigured,
    buildAuthenticator,
    buildTLSOptions,
    checkSecurityConfig,
)
from zotwist.auth.authenticator import buildAuthorizer as buildDefaultAuthorizer
from zotwist.auth.authorizer import buildAuthorizer
from zotwist.auth.bearer import bearerKeysFromConfig, buildBearerAuthenticator
from zotwist.config import ConfigError, loadConfig
from zotwist.logs import LogService
from zotwist.memory import tuneAllocator
from zotwist.service import HTTPService, StoreService
from zotwist.storage.local import LocalStore
from zotwist.threads import ThreadPoolRunner
from zotwist.web.audit import buildAuditLog
from zotwist.web.ratelimit import buildRateLimiter
from zotwist.web.site import RegistrySite
from zotwist.workers import WorkerPool


class Options(usage.Options):
    """
    Command-line options of C{twistd zot}.
    """

    synopsis = "[-c FILE]"
    longdesc = "Run the zotwist OCI registry with a zot-format JSON config file."
    optParameters = [
        ["config", "c", "/etc/zot/config.json", "The zot JSON configuration file."],
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
    config, reactor=None, adoptFD: int | None = None, isWorker: bool = False
) -> MultiService:
    """
    Build the registry's service tree from a loaded L{zotwist.config.Config}.

    @param adoptFD: in a worker process, the inherited listening socket.
    @param isWorker: this is an extra worker (it starts no workers itself).
    """
    if reactor is None:
        from twisted.internet import reactor
    tuneAllocator()
    top = MultiService()
    logs = LogService(config)
    logs.setServiceParent(top)
    runner = ThreadPoolRunner(reactor, minThreads=2, maxThreads=16, name="disk")
    runner.setServiceParent(top)
    store = LocalStore(config.storage.rootDirectory, runner, commit=config.storage.commit)
    storeService = StoreService(store)
    storeService.setServiceParent(top)
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
    site = RegistrySite(
        store,
        bearer or authenticator,
        buildAuthorizer(config, store) or buildDefaultAuthorizer(config),
        limiter=buildRateLimiter(config, reactor),
        audit=audit,
        sender=sender,
    )
    http = HTTPService(
        reactor, site, config.http.address, config.http.port, storeService, tlsOptions,
        adoptFD=adoptFD,
    )
    http.setServiceParent(top)
    if config.http.workers > 1 and not isWorker:
        WorkerPool(reactor, config.source, config.http.workers - 1, http).setServiceParent(top)
    return top


def makeService(options: Options) -> MultiService:
    """
    twistd's entry point: the service for the config L{Options} loaded.
    """
    return makeServiceFromConfig(options["loadedConfig"])


__all__ = ["Options", "makeService", "makeServiceFromConfig"]
