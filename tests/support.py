"""
Shared fixtures: a registry started in-process on a real loopback port.

L{startRegistry} is the one way tests bring up a server: it writes a zot
config file, loads it through the same loader C{twistd zot} uses, builds the
same service, listens on an ephemeral port on 127.0.0.1 and registers the
clean-up with the test case.
"""

import json
import os
from dataclasses import dataclass
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.web.client import Agent, HTTPConnectionPool


def deepMerge(base: dict, extra: dict) -> dict:
    """
    Merge C{extra} into a copy of C{base}, recursing into dicts.
    """
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deepMerge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class RunningRegistry:
    """
    A registry serving on loopback for the length of one test.

    @ivar url: the base URL, e.g. C{http://127.0.0.1:40123} (no trailing slash).
    @ivar root: the storage root directory (a str path).
    @ivar configPath: the config file the service was built from.
    @ivar service: the started top-level service.
    @ivar client: a treq client with a non-persistent pool.
    """

    url: str
    root: str
    configPath: str
    service: Any
    client: HTTPClient
    port: int


async def startRegistry(testCase, config: dict | None = None) -> RunningRegistry:
    """
    Start a registry for C{testCase} and stop it when the test ends.

    @param config: zot config keys merged over a minimal config whose
        C{storage.rootDirectory} is a fresh temporary directory and whose
        C{http.port} is C{"0"} (an ephemeral port on 127.0.0.1).
    """
    from zotwist.config import loadConfig
    from zotwist.tap import makeServiceFromConfig

    base = os.path.abspath(testCase.mktemp())
    os.makedirs(base)
    root = os.path.join(base, "store")
    document = deepMerge(
        {
            "distSpecVersion": "1.1.1",
            "storage": {"rootDirectory": root},
            "http": {"address": "127.0.0.1", "port": "0", "workers": 1},
            "log": {"level": "error"},
        },
        config or {},
    )
    configPath = os.path.join(base, "config.json")
    with open(configPath, "w") as f:
        json.dump(document, f)
    loaded = loadConfig(configPath)
    service = makeServiceFromConfig(loaded, reactor=_reactor)
    service.startService()
    testCase.addCleanup(service.stopService)
    http = service.getServiceNamed("http")
    port = await http.whenListening()
    pool = HTTPConnectionPool(_reactor, persistent=False)
    testCase.addCleanup(pool.closeCachedConnections)
    client = HTTPClient(Agent(_reactor, pool=pool))
    return RunningRegistry(
        url=f"http://127.0.0.1:{port}",
        root=loaded.storage.rootDirectory,
        configPath=configPath,
        service=service,
        client=client,
        port=port,
    )


__all__ = ["startRegistry", "RunningRegistry", "deepMerge", "treq"]
