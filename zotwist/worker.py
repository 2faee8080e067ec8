# -*- test-case-name: tests.test_workers -*-
"""
The entry point of an extra worker process (see L{zotwist.workers}).

C{python -m zotwist.worker --config FILE --fd 3 --index N}: load the same
config, build the same service, but serve the inherited listening socket
instead of binding one, and stop when the parent process goes away.
"""

import argparse
import os
import sys


def _dieWithParent() -> None:
    """
    Ask Linux to kill this worker the moment the process that started it
    dies (C{PR_SET_PDEATHSIG}), so a registry killed with SIGKILL leaves no
    orphan holding its port; the C{getppid} poll below is the fallback.
    """
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zotwist.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--parent", type=int, default=None)
    args = parser.parse_args(argv)
    # First of all: die with the parent, and leave if it is already gone
    # (it may have died while this process was starting).
    _dieWithParent()
    parent = args.parent if args.parent is not None else os.getppid()
    if os.getppid() != parent:
        return 1

    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from zotwist.config import ConfigError, loadConfig
    from zotwist.tap import makeServiceFromConfig

    try:
        config = loadConfig(args.config)
    except ConfigError as e:
        print(f"zotwist worker {args.index}: {e}", file=sys.stderr)
        return 1
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    service = makeServiceFromConfig(config, reactor=reactor, adoptFD=args.fd, isWorker=True)

    def orphaned():
        if os.getppid() != parent:
            # The parent is gone: nobody will stop this worker, and a
            # restarted registry needs the port.  Stop, but never hang.
            reactor.callLater(5, os._exit, 0)
            reactor.stop()

    LoopingCall(orphaned).start(1.0, now=False)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
