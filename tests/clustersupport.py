# -*- test-case-name: tests.test_clustersupport -*-
"""
The shared engines of a scale-out test: a real S3 store (a single-host Ceph
cluster: monitor, in-memory OSD, RADOS Gateway) and a real C{redis-server},
both on 127.0.0.1, on free ports, never the system's.

Each is started lazily, once per process (so once per trial worker), the first
time a test asks for it, and stopped when the process exits: by an C{atexit}
hook, and, should the process die without running it (SIGKILL, a crash), by
the kernel, because every daemon is started with C{PR_SET_PDEATHSIG} =
SIGKILL.  Tests isolate themselves by bucket (L{newBucket}) and Redis key
prefix, not by starting their own servers: a Ceph start takes about 1.5 s.

How the Ceph cluster is configured, and why, is in C{/work/shared/ceph-s3.md}
(kept in this module's docstrings where it matters): two settings are
mandatory, C{ms_mon_client_mode = crc secure} for radosgw under C{auth =
none}, and the short paxos intervals without which a start takes 13 s.

The API::

    cephS3() -> S3Endpoint          .url, .accessKey, .secretKey, .region
    newBucket(endpoint) -> str      a fresh, empty bucket
    redisServer() -> RedisEndpoint  .url, .port, .flushall(), .restart()
    s3StorageConfig(endpoint, bucket, redisURL, rootdirectory="/zot") -> dict

All of them block (they are for test set-up, and a start is short) and must
be called from the main thread: C{PR_SET_PDEATHSIG} fires when the I{thread}
that started a child ends, so a daemon started from a pool thread would die
with that thread.
"""

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

from twisted.trial.unittest import FailTest

from tests.procsupport import freePort

#: The Debian packages the fixtures need (also in C{tests/run.sh}).
CEPH_PACKAGES = "ceph-mon ceph-osd radosgw ceph-common"
REDIS_PACKAGES = "redis-server"

#: Fixed S3 credentials of the one RGW user; the cluster is throwaway and
#: listens on loopback only.
ACCESS_KEY = "ZOTWISTTESTACCESSKEY"
SECRET_KEY = "zotwist-test-secret-key-0123456789abcdef"
REGION = "us-east-1"

#: How many times a Ceph start is retried (with new ports and a new
#: directory) when a daemon exits early, e.g. because a port was taken
#: between choosing it and binding it.
START_ATTEMPTS = 3

#: Seconds one start may take before it counts as failed; a normal start
#: takes about 1.5 s.
START_TIMEOUT = 60.0


def _dieWithParent() -> None:
    """
    C{preexec_fn} of every daemon: the kernel SIGKILLs it when the thread that
    started it (the test process's main thread) exits, however it exits.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _tool(name: str, packages: str) -> str:
    """
    The path of a program the fixtures run; a missing one fails the test with
    what to install.
    """
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise FailTest(
            f"{name} is not installed: the scale-out tests need the Debian packages "
            f"{packages}; run `bash tests/run.sh`, which installs them"
        )
    return found


def _requireMainThread(what: str) -> None:
    """
    Refuse to start a daemon from another thread (see the module docstring).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"{what} must be started from the main thread (PR_SET_PDEATHSIG)")


def _spawn(argv: list[str], logPath: str) -> subprocess.Popen:
    """
    Start a daemon in the foreground, its output appended to C{logPath}, in
    its own session (a Ctrl-C meant for trial does not reach it: the
    fixture stops it in order), dying with this process.
    """
    with open(logPath, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_dieWithParent,
        )


def _kill(process: subprocess.Popen | None) -> None:
    """
    SIGKILL a daemon and reap it (its data is thrown away anyway).
    """
    if process is None or process.poll() is not None:
        return
    try:
        process.kill()
    except ProcessLookupError:
        pass
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: str, limit: int = 2000) -> str:
    """
    The end of a log file, or a note that there is none.
    """
    try:
        with open(path, errors="replace") as f:
            return f.read()[-limit:]
    except OSError:
        return f"(no {path})"


class _EarlyExit(Exception):
    """
    A daemon exited (or a step failed) while the cluster was starting; the
    start is retried with new ports.
    """


@dataclass(frozen=True)
class S3Endpoint:
    """
    Where the test S3 store answers, and how to sign requests to it.

    @ivar url: C{http://127.0.0.1:PORT}.
    @ivar accessKey: the S3 access key.
    @ivar secretKey: the S3 secret key.
    @ivar region: the region to sign for (RGW accepts any; C{us-east-1}).
    @ivar directory: the cluster's temporary directory (logs in C{log/}).
    """

    url: str
    accessKey: str
    secretKey: str
    region: str = REGION
    directory: str = ""

    def client(self):
        """
        A boto3 S3 client for this endpoint (path-style addressing), for test
        assertions that look at the bucket directly.
        """
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.accessKey,
            aws_secret_access_key=self.secretKey,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )


class CephCluster:
    """
    One throwaway Ceph cluster: a monitor, a memstore OSD and radosgw, with
    all state under one temporary directory.

    @ivar endpoint: the L{S3Endpoint}, once started.
    @ivar directory: the temporary directory of the running cluster.
    """

    def __init__(self):
        self.endpoint: S3Endpoint | None = None
        self.directory: str | None = None
        self._processes: dict[str, subprocess.Popen] = {}

    def start(self) -> S3Endpoint:
        """
        Start the cluster, retrying with new ports and a new directory if a
        daemon exits early.  A failed attempt's directory (and its logs) is
        kept and named in the failure.

        @raise FailTest: if every attempt failed.
        """
        _requireMainThread("Ceph")
        failures = []
        for _ in range(START_ATTEMPTS):
            directory = tempfile.mkdtemp(prefix="zotwist-ceph-")
            try:
                self.endpoint = self._startIn(directory)
            except _EarlyExit as e:
                self._killAll()
                failures.append(f"{directory}: {e}")
                continue
            except BaseException:
                self._killAll()
                raise
            self.directory = directory
            return self.endpoint
        raise FailTest(
            "Ceph did not start (logs kept in the directories named):\n" + "\n\n".join(failures)
        )

    def stop(self) -> None:
        """
        Kill the daemons (radosgw, then the OSD, then the monitor: the data
        is thrown away, so SIGKILL is enough) and remove the directory.
        """
        self._killAll()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        self.endpoint = None

    def _killAll(self) -> None:
        """
        SIGKILL every daemon of the current attempt, the gateway first.
        """
        for name in ("rgw", "osd", "mon"):
            _kill(self._processes.pop(name, None))
        for process in self._processes.values():
            _kill(process)
        self._processes.clear()

    def _startIn(self, d: str) -> S3Endpoint:
        """
        One start attempt in directory C{d}, following the steps of
        C{ceph-s3.md}: keyring and monmap, monitor, OSD, radosgw, S3 user.
        """
        binaries = {
            name: _tool(name, CEPH_PACKAGES)
            for name in (
                "ceph-authtool",
                "monmaptool",
                "ceph-mon",
                "ceph-osd",
                "radosgw",
                "radosgw-admin",
                "ceph",
            )
        }
        for sub in ("mon.a", "osd.0", "run", "log", "rgw", "crash"):
            os.makedirs(os.path.join(d, sub))
        monPort, rgwPort = freePort(), freePort()
        while rgwPort == monPort:
            rgwPort = freePort()
        fsid = str(uuid.uuid4())
        conf = os.path.join(d, "ceph.conf")
        with open(conf, "w") as f:
            f.write(_cephConf(d, fsid, monPort, rgwPort))
        deadline = time.monotonic() + START_TIMEOUT
        logPath = os.path.join(d, "log", "setup.log")

        def step(*argv: str) -> str:
            """
            Run one set-up command; a failure is an early exit (retried).
            """
            remaining = max(1.0, deadline - time.monotonic())
            try:
                done = subprocess.run(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=remaining,
                    preexec_fn=_dieWithParent,
                )
            except subprocess.TimeoutExpired as e:
                raise _EarlyExit(f"{' '.join(argv)} timed out") from e
            with open(logPath, "ab") as log:
                log.write(b"$ " + " ".join(argv).encode() + b"\n" + done.stdout + done.stderr)
            if done.returncode != 0:
                raise _EarlyExit(
                    f"{' '.join(argv)} exited with {done.returncode}: "
                    f"{done.stderr.decode(errors='replace')[-1500:]}"
                )
            return done.stdout.decode()

        keyring = os.path.join(d, "keyring")
        step(
            binaries["ceph-authtool"], "--create-keyring", keyring, "--gen-key",
            "-n", "mon.", "--cap", "mon", "allow *",
        )
        monmap = os.path.join(d, "monmap")
        step(
            binaries["monmaptool"], "--create", "--fsid", fsid,
            "--addv", "a", f"[v2:127.0.0.1:{monPort}]",
            "--set-min-mon-release", "pacific", "--enable-all-features", monmap,
        )
        step(
            binaries["ceph-mon"], "-c", conf, "--mkfs", "-i", "a",
            "--monmap", monmap, "--keyring", keyring,
        )
        self._processes["mon"] = _spawn(
            [binaries["ceph-mon"], "-c", conf, "-i", "a", "-f"], os.path.join(d, "log", "mon.out")
        )
        ceph = [binaries["ceph"], "-c", conf, "--connect-timeout", "10"]
        self._waitFor(lambda: self._succeeds(ceph + ["mon", "stat"]), deadline, "the monitor", d)
        osdUUID = str(uuid.uuid4())
        osdID = step(*ceph, "osd", "new", osdUUID).strip()
        step(binaries["ceph-osd"], "-c", conf, "-i", osdID, "--mkfs", "--osd-uuid", osdUUID)
        self._processes["osd"] = _spawn(
            [binaries["ceph-osd"], "-c", conf, "-i", osdID, "-f"],
            os.path.join(d, "log", "osd.out"),
        )

        def osdUp() -> bool:
            out = self._succeeds(ceph + ["osd", "stat", "-f", "json"])
            return bool(out) and json.loads(out).get("num_up_osds") == 1

        self._waitFor(osdUp, deadline, "the OSD", d)
        self._processes["rgw"] = _spawn(
            [binaries["radosgw"], "-c", conf, "-n", "client.rgw", "-f"],
            os.path.join(d, "log", "rgw.out"),
        )
        url = f"http://127.0.0.1:{rgwPort}"
        self._waitFor(lambda: _answers(url), deadline, "radosgw", d)
        step(
            binaries["radosgw-admin"], "-c", conf, "user", "create", "--uid=zotwist-test",
            "--display-name=zotwist test", f"--access-key={ACCESS_KEY}",
            f"--secret-key={SECRET_KEY}",
        )
        return S3Endpoint(url=url, accessKey=ACCESS_KEY, secretKey=SECRET_KEY, directory=d)

    def _succeeds(self, argv: list[str]) -> str | None:
        """
        Run a probe command; its output if it succeeded, else L{None}.
        """
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=15,
                preexec_fn=_dieWithParent,
            )
        except subprocess.TimeoutExpired:
            return None
        return done.stdout.decode() if done.returncode == 0 else None

    def _waitFor(self, ready, deadline: float, what: str, d: str) -> None:
        """
        Poll C{ready} until it is true; a daemon exiting meanwhile, or the
        deadline passing, is an early exit (with the daemons' log tails).
        """
        while True:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise _EarlyExit(
                        f"{name} exited with {process.returncode} while waiting for {what}; "
                        + _logTails(d)
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                raise _EarlyExit(f"timed out waiting for {what}; " + _logTails(d))
            time.sleep(0.05)


def _answers(url: str) -> bool:
    """
    Whether an HTTP server answers at C{url} (any status counts).
    """
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _logTails(d: str) -> str:
    """
    The ends of the daemon logs of a cluster directory, for a failure message.
    """
    names = ("mon.a.log", "osd.0.log", "client.rgw.log", "mon.out", "osd.out", "rgw.out")
    return "\n".join(
        f"--- {name}:\n{_tail(os.path.join(d, 'log', name), 800)}"
        for name in names
        if os.path.exists(os.path.join(d, "log", name))
    )


def _cephConf(d: str, fsid: str, monPort: int, rgwPort: int) -> str:
    """
    The cluster's C{ceph.conf}: one monitor and one memstore OSD on loopback,
    no authentication, one replica, few placement groups, and the two settings
    that C{ceph-s3.md} found mandatory (see the comments in the text).
    """
    return f"""[global]
fsid = {fsid}
mon_host = v2:127.0.0.1:{monPort}
public_addr = 127.0.0.1
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_msgr1 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = {d}/keyring
run_dir = {d}/run
log_file = {d}/log/$name.log
admin_socket = {d}/run/$name.asok
pid_file = {d}/run/$name.pid
mon_cluster_log_file = {d}/log/cluster.log
crash_dir = {d}/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
# A monitor shuts itself down when its filesystem is nearly full by default.
mon_data_avail_warn = 1
mon_data_avail_crit = 0
osd_objectstore = memstore
# Mandatory for a fast start: every pool create waits for a paxos round,
# 1 s by default, and radosgw creates seven pools (13 s instead of 1.5 s).
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
[mon]
mon_data = {d}/mon.$id
mon_allow_pool_delete = true
[osd]
osd_data = {d}/osd.$id
keyring = {d}/osd.$id/keyring
# memstore keeps every object in RAM; this is the cap, not an allocation.
memstore_device_bytes = 8589934592
osd_memory_target = 1073741824
[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:{rgwPort}
rgw_data = {d}/rgw
rgw_enable_usage_log = false
rgw_enable_apis = s3, admin
# Mandatory: radosgw's built-in default is ms_mon_client_mode = secure,
# which auth = none cannot satisfy (it never connects, retrying every 3 s).
ms_mon_client_mode = crc secure
"""


@dataclass
class RedisEndpoint:
    """
    A running C{redis-server} of this process.

    @ivar port: its TCP port on 127.0.0.1.
    @ivar url: C{redis://127.0.0.1:PORT/0}.
    """

    port: int
    directory: str
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """
        Start C{redis-server} on L{port}, without persistence (C{--save ''},
        C{--appendonly no}), and wait until it answers PING.
        """
        _requireMainThread("redis-server")
        binary = _tool("redis-server", REDIS_PACKAGES)
        logPath = os.path.join(self.directory, "redis.log")
        self.process = _spawn(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", self.directory,
                "--protected-mode", "no",
            ],
            logPath,
        )
        deadline = time.monotonic() + 20
        while not self._pings():
            if self.process.poll() is not None:
                raise _EarlyExit(
                    f"redis-server exited with {self.process.returncode}: {_tail(logPath)}"
                )
            if time.monotonic() > deadline:
                raise _EarlyExit(f"redis-server did not answer: {_tail(logPath)}")
            time.sleep(0.02)

    def _pings(self) -> bool:
        """
        Whether the server answers PING (a raw RESP exchange, no client).
        """
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """
        Kill the server (it persists nothing, so nothing is lost that a test
        did not mean to lose).
        """
        _kill(self.process)
        self.process = None

    def flushall(self) -> None:
        """
        Delete every key in every database.
        """
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def restart(self) -> None:
        """
        Kill the server and start a new, EMPTY one on the same port: what
        the instances see when Redis is restarted without persistence.
        """
        self.stop()
        self.start()

    def client(self):
        """
        A redis-py client for test assertions.
        """
        import redis

        return redis.Redis.from_url(self.url)


_lock = threading.Lock()
_ceph: CephCluster | None = None
_redis: RedisEndpoint | None = None
_atexitRegistered = False
_localDirectories: list[str] = []


def _registerAtExit() -> None:
    """
    Stop the engines when the process exits (once).
    """
    global _atexitRegistered
    if not _atexitRegistered:
        atexit.register(stopAll)
        _atexitRegistered = True


def stopAll() -> None:
    """
    Stop whatever this process started (the C{atexit} hook; safe to call
    more than once).
    """
    global _ceph, _redis
    while _localDirectories:
        shutil.rmtree(_localDirectories.pop(), ignore_errors=True)
    if _redis is not None:
        _redis.stop()
        shutil.rmtree(_redis.directory, ignore_errors=True)
        _redis = None
    if _ceph is not None:
        _ceph.stop()
        _ceph = None


def cephS3() -> S3Endpoint:
    """
    This process's Ceph S3 endpoint, started on first use (about 1.5 s).
    """
    global _ceph
    with _lock:
        if _ceph is None or _ceph.endpoint is None:
            _registerAtExit()
            cluster = CephCluster()
            cluster.start()
            _ceph = cluster
        return _ceph.endpoint


def newBucket(endpoint: S3Endpoint) -> str:
    """
    Create a fresh, empty bucket and return its name.
    """
    name = "zt-" + uuid.uuid4().hex[:24]
    endpoint.client().create_bucket(Bucket=name)
    return name


def redisServer() -> RedisEndpoint:
    """
    This process's C{redis-server}, started on first use.  Tests share it:
    isolate by key prefix, or L{RedisEndpoint.flushall} when a test needs it
    empty.
    """
    global _redis
    with _lock:
        if _redis is None:
            _registerAtExit()
            failures = []
            for _ in range(START_ATTEMPTS):
                server = RedisEndpoint(
                    port=freePort(), directory=tempfile.mkdtemp(prefix="zotwist-redis-")
                )
                try:
                    server.start()
                except _EarlyExit as e:
                    server.stop()
                    failures.append(f"{server.directory}: {e}")
                    continue
                _redis = server
                break
            else:
                raise FailTest("redis-server did not start:\n" + "\n".join(failures))
        return _redis


def s3StorageConfig(
    endpoint: S3Endpoint,
    bucket: str,
    redisURL: str,
    rootdirectory: str = "/zot",
    localDirectory: str | None = None,
) -> dict:
    """
    zot's C{storage} section for this S3 store and Redis, as zot and the
    Docker registry spell it.

    @param rootdirectory: the key prefix inside the bucket.
    @param localDirectory: zot's (still required) local C{rootDirectory};
        a fresh temporary directory when not given (removed when the
        process exits).
    """
    if localDirectory is None:
        localDirectory = tempfile.mkdtemp(prefix="zotwist-s3local-")
        _registerAtExit()
        _localDirectories.append(localDirectory)
    return {
        "rootDirectory": localDirectory,
        "dedupe": True,
        "remoteCache": True,
        "storageDriver": {
            "name": "s3",
            "rootdirectory": rootdirectory,
            "region": endpoint.region,
            "regionendpoint": endpoint.url,
            "bucket": bucket,
            "secure": False,
            "skipverify": False,
            "forcepathstyle": True,
            "accesskey": endpoint.accessKey,
            "secretkey": endpoint.secretKey,
        },
        "cacheDriver": {"name": "redis", "url": redisURL},
    }
