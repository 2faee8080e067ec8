"""
Run N zotwist instances on S3 + Redis behind HAProxy in the foreground,
for benchmarks, until SIGTERM or SIGINT:

    python3 -m tests.benchcluster --instances 3 --port 5000

Everything is what the cluster tests start (L{tests.lbsupport}): a
throwaway single-host Ceph (RADOS Gateway) and a C{redis-server} of this
process, a fresh bucket, the instances (twistd, from this checkout) and
HAProxy on C{--port}, all on 127.0.0.1, all killed when this process ends.
The shared load generator takes it as an ad hoc target:

    ../shared/bench/run.sh --quick \\
      --def s3x3 http://127.0.0.1:5000 'exec python3 -m tests.benchcluster --port 5000' \\
      --pair s3x3 zotwist

(its server-CPU column then counts this process only, not the instances).
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react


class _Session:
    """
    What L{tests.lbsupport} needs of a test case: temporary directories
    and clean-ups, run when the cluster stops.
    """

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix="zotwist-benchcluster-")
        self._cleanups: list = []
        self._count = 0

    def mktemp(self) -> str:
        self._count += 1
        return os.path.join(self.base, str(self._count))

    def addCleanup(self, function, *args) -> None:
        self._cleanups.append((function, args))

    async def cleanUp(self) -> None:
        while self._cleanups:
            function, args = self._cleanups.pop()
            try:
                result = function(*args)
                if isinstance(result, Deferred):
                    await result
                elif hasattr(result, "__await__"):
                    await result
            except Exception as e:  # keep cleaning
                print(f"benchcluster: clean-up failed: {e!r}", file=sys.stderr)
        shutil.rmtree(self.base, ignore_errors=True)


async def _run(reactor, instances: int, port: int, logLevel: str) -> None:
    from tests import lbsupport

    session = _Session()
    cluster = lbsupport.RegistryCluster(
        session, count=instances, config={"log": {"level": logLevel}},
        reactor=reactor, balancerPort=port, checks=lbsupport.PATIENT_CHECKS,
    )
    stopped = Deferred()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: reactor.callFromThread(stopped.callback, None))
    try:
        await cluster.start()
        print(f"benchcluster: {instances} instances on s3 behind {cluster.url}", flush=True)
        await stopped
    finally:
        await cluster.pool.closeCachedConnections()
        await session.cleanUp()
        from tests import clustersupport

        clustersupport.stopAll()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warn")
    options = parser.parse_args(argv)
    react(
        lambda reactor: ensureDeferred(
            _run(reactor, options.instances, options.port, options.log_level)
        )
    )


if __name__ == "__main__":
    main()
