# -*- test-case-name: tests.test_cluster -*-
"""
Several zotwist processes on one S3 store and one Redis, behind a real
load balancer (HAProxy from Debian) that spreads requests round-robin.

A scale-out test must see what a fleet behind a balancer sees: consecutive
requests of one client, even on one keep-alive connection, land on
different instances.  HAProxy is configured for exactly that:

  - C{balance roundrobin} with C{option http-server-close}: every request is
    balanced on its own and the connection to the backend closes after each
    response, so nothing sticks a client to an instance (no cookies, no
    source hashing, no reused server connection);
  - bodies stream both ways (HAProxy buffers neither unless told to, and has
    no body size limit), so a multi-MiB PATCH reaches the instance as it is
    sent;
  - C{Host} and C{Location} pass through unchanged: upload URLs the
    instances answer with are paths, which the client resolves against the
    balancer, so an upload started on one instance continues on any;
  - a backend that refuses connections (killed) is retried on another one
    (C{retries} + C{option redispatch}, HAProxy's default C{retry-on
    conn-failure}), and a health check of C{/readyz} every 200 ms takes it
    out of the rotation (as it does an instance that is stopping).  A
    request that already reached a backend which then died is NOT
    replayed: its body may be half sent, and replaying a PATCH or PUT
    behind the client's back could apply it twice.  The client gets a 502
    (or its connection closed) and retries itself, as registry clients do;
  - each response carries C{X-Zotwist-Instance}, the name of the backend
    HAProxy sent the request to (C{zot0}, C{zot1}, ...), so that tests can
    prove where each request went.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time

from treq.client import HTTPClient
from twisted.internet.task import deferLater
from twisted.trial.unittest import FailTest
from twisted.web.client import Agent, HTTPConnectionPool

from tests.clustersupport import cephS3, newBucket, redisServer, s3StorageConfig
from tests.procsupport import RegistryProcess, freePort

#: The response header naming the backend that answered.
INSTANCE_HEADER = "X-Zotwist-Instance"


def _dieWithParent() -> None:
    """
    C{preexec_fn} of HAProxy: the kernel kills it when the test process
    (its starting thread) dies, however it dies.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


#: The health checks of the tests: a dead instance is out within 200 ms.
QUICK_CHECKS = "check inter 200ms fall 1 rise 2"
#: Health checks for benchmarks: an instance busy for a moment (a /readyz
#: answered late under load) stays in the rotation.
PATIENT_CHECKS = "check inter 1s fall 3 rise 2"


def haproxyConfig(port: int, backends: "list[tuple[str, int]]",
                  checks: str = QUICK_CHECKS) -> str:
    """
    The HAProxy configuration described in the module docstring.

    @param port: the balancer's port on 127.0.0.1.
    @param backends: C{(name, port)} of each instance on 127.0.0.1.
    @param checks: the health-check options of each server line.
    """
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{backendPort} {checks}"
        for name, backendPort in backends
    )
    return f"""\
global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout http-request 60s
    timeout http-keep-alive 60s
    option http-server-close
    retries 3
    option redispatch 1

frontend registry
    bind 127.0.0.1:{port}
    http-response set-header {INSTANCE_HEADER} %[srv_name]
    default_backend zotwist

backend zotwist
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
"""


class LoadBalancer:
    """
    An HAProxy process in front of some backends, killed at the end of the
    test.

    @ivar port: its port on 127.0.0.1.
    @ivar url: C{http://127.0.0.1:PORT}.
    """

    def __init__(self, testCase, backends: "list[tuple[str, int]]",
                 port: int | None = None, checks: str = QUICK_CHECKS) -> None:
        """
        Write the configuration; L{start} starts it.

        @param port: the port to listen on; a free one by default.
        @param checks: see L{haproxyConfig}.
        """
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(binary):
            raise FailTest("haproxy is not installed: apt-get install haproxy")
        self._binary = binary
        self.base = os.path.abspath(testCase.mktemp())
        os.makedirs(self.base)
        self.port = port or freePort()
        self.url = f"http://127.0.0.1:{self.port}"
        self.configPath = os.path.join(self.base, "haproxy.cfg")
        self.logPath = os.path.join(self.base, "haproxy.log")
        with open(self.configPath, "w") as f:
            f.write(haproxyConfig(self.port, backends, checks))
        self.process: subprocess.Popen | None = None
        testCase.addCleanup(self.stop)

    def start(self, timeout: float = 10.0) -> None:
        """
        Check the configuration, start HAProxy in the foreground and wait
        until it accepts connections.
        """
        check = subprocess.run(
            [self._binary, "-c", "-f", self.configPath], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise FailTest(f"haproxy rejects its configuration:\n{check.stdout}{check.stderr}")
        with open(self.logPath, "ab") as log:
            self.process = subprocess.Popen(
                [self._binary, "-db", "-f", self.configPath],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_dieWithParent,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise FailTest(f"haproxy exited with {self.process.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise FailTest(f"haproxy did not listen within {timeout} s: {self.log()}")
                time.sleep(0.02)

    def log(self) -> str:
        """
        What HAProxy printed.
        """
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """
        Kill HAProxy and reap it.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class RegistryCluster:
    """
    C{count} zotwist processes on one fresh bucket of the per-process Ceph
    cluster and the per-process Redis, behind a L{LoadBalancer}.

    @ivar instances: the L{RegistryProcess}es; instance C{i} is the backend
        HAProxy calls C{zot<i>}.
    @ivar balancer: the L{LoadBalancer}.
    @ivar url: the balancer's base URL: where clients go.
    @ivar client: a treq client with a persistent connection pool to the
        balancer, so consecutive requests share keep-alive connections (and
        must still be spread).
    @ivar s3: the L{tests.clustersupport.S3Endpoint}; C{bucket} the bucket.
    @ivar redis: the L{tests.clustersupport.RedisEndpoint}.
    @ivar storage: the C{storage} section every instance runs with.
    """

    def __init__(self, testCase, count: int = 3, storage: dict | None = None,
                 config: dict | None = None, reactor=None,
                 balancerPort: int | None = None, checks: str = QUICK_CHECKS) -> None:
        """
        Prepare the instances and the balancer; L{start} starts them.

        @param storage: keys merged over the S3 C{storage} section (e.g.
            C{gcDelay}).
        @param config: other config sections for every instance.
        @param balancerPort: the balancer's port; a free one by default.
        @param checks: the balancer's health-check options (see
            L{haproxyConfig}).
        """
        from twisted.internet import reactor as globalReactor

        self._reactor = reactor or globalReactor
        self.s3 = cephS3()
        self.bucket = newBucket(self.s3)
        self.redis = redisServer()
        section = s3StorageConfig(
            self.s3, self.bucket, self.redis.url, localDirectory="/unused"
        )
        # Each instance keeps its own local rootDirectory (RegistryProcess's).
        del section["rootDirectory"]
        section.update(storage or {})
        self.storage = section
        document = dict(config or {})
        document["storage"] = section
        document.setdefault("log", {"level": "info"})
        self.instances = [
            RegistryProcess(testCase, document, reactor=self._reactor) for _ in range(count)
        ]
        self.names = [f"zot{i}" for i in range(count)]
        self.balancer = LoadBalancer(
            testCase, [(name, p.port) for name, p in zip(self.names, self.instances)],
            port=balancerPort, checks=checks,
        )
        self.url = self.balancer.url
        self.pool = HTTPConnectionPool(self._reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.client = HTTPClient(Agent(self._reactor, pool=self.pool))
        testCase.addCleanup(self.pool.closeCachedConnections)

    async def start(self) -> None:
        """
        Start every instance (one after the other: the first rebuilds an
        empty state), then the balancer, and wait until HAProxy's health
        checks see every instance up.
        """
        for instance in self.instances:
            await instance.start(timeout=60.0)
        self.balancer.start()
        await self.waitUntilSpread(set(self.names))

    def instanceNamed(self, name: str) -> RegistryProcess:
        """
        The instance HAProxy calls C{name}.
        """
        return self.instances[self.names.index(name)]

    async def waitUntilSpread(self, names: set, timeout: float = 20.0) -> None:
        """
        Wait until C{GET /v2/} through the balancer has been answered by
        each of C{names} (HAProxy's health checks have marked them up).
        """
        seen: set = set()
        deadline = time.monotonic() + timeout
        while not names <= seen:
            try:
                response = await self.client.get(self.url + "/v2/", timeout=5)
                await response.content()
                seen.update(response.headers.getRawHeaders(INSTANCE_HEADER, []))
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise FailTest(
                    f"the balancer spread GET /v2/ only to {sorted(seen)}, not "
                    f"{sorted(names)}; haproxy: {self.balancer.log()}"
                )
            await deferLater(self._reactor, 0.05)
