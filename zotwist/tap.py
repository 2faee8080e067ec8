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
    buildAuthenticator,
    buildAuthorizer,
    buildTLSOptions,
    checkSecurityConfig,
)
from zotwist.config import ConfigError, loadConfig
from zotwist.logs import LogService
from zotwist.service import HTTPService, StoreService
from zotwist.storage.local import LocalStore
from zotwist.threads import ThreadPoolRunner
from zotwist.web.site import RegistrySite


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
            checkSecurityConfig(self["loadedConfig"])
        except ConfigError as e:
            raise usage.UsageError(str(e))


def makeServiceFromConfig(config, reactor=None) -> MultiService:
    """
    Build the registry's service tree from a loaded L{zotwist.config.Config}.
    """
    if reactor is None:
        from twisted.internet import reactor
    top = MultiService()
    logs = LogService(config)
    logs.setServiceParent(top)
    runner = ThreadPoolRunner(reactor, minThreads=2, maxThreads=16, name="disk")
    runner.setServiceParent(top)
    store = LocalStore(config.storage.rootDirectory, runner, commit=config.storage.commit)
    storeService = StoreService(store)
    storeService.setServiceParent(top)
    tlsOptions = buildTLSOptions(config)
    auth = ThreadPoolRunner(reactor, minThreads=0, maxThreads=4, name="auth")
    auth.setServiceParent(top)
    authenticator = buildAuthenticator(config, reactor, auth)
    site = RegistrySite(store, authenticator, buildAuthorizer(config))
    http = HTTPService(
        reactor, site, config.http.address, config.http.port, storeService, tlsOptions
    )
    http.setServiceParent(top)
    return top


def makeService(options: Options) -> MultiService:
    """
    twistd's entry point: the service for the config L{Options} loaded.
    """
    return makeServiceFromConfig(options["loadedConfig"])


__all__ = ["Options", "makeService", "makeServiceFromConfig"]
