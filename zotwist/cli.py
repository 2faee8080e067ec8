# -*- test-case-name: tests.test_cli -*-
"""
The C{zot} command, so that zotwist is driven like zot itself:

    zot verify config.json    check a config without starting anything
    zot serve config.json     run the registry in the foreground
    zot gc config.json|ROOT   collect garbage once, the registry stopped
    zot scrub config.json     check every blob and manifest, the registry
                              stopped; exit status 1 when damage is found
    zot -v                    print the versions

C{serve} hands over to C{twistd -n --pidfile= zot --config FILE}, so that the
running service is exactly what C{twistd zot} builds (logging, reactor
choice, signal handling), and this module stays a thin front door.
"""

import argparse
import os
import sys

from zotwist.auth.authenticator import checkSecurityConfig
from zotwist.config import ConfigError, loadConfig

#: Starts twistd in the running interpreter.  C{python -m twisted} would run
#: C{twist}, which takes neither C{-n} nor C{--pidfile}; and a C{twistd}
#: script found on C{PATH} might belong to another Python.
_TWISTD = (
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)

#: Replaces this process with another program; tests swap it for a recorder.
_execv = os.execv


def _parser() -> argparse.ArgumentParser:
    """
    Build the argument parser: C{-v}/C{--version} and one subcommand.
    """
    parser = argparse.ArgumentParser(
        prog="zot",
        description="zotwist, an OCI registry on Twisted that reads zot's config.",
    )
    parser.add_argument(
        "-v",
        "--version",
        action="store_true",
        help="print the zotwist and distribution-spec versions and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    verify = commands.add_parser(
        "verify", help="check a config file without starting anything"
    )
    verify.add_argument("config", metavar="FILE", help="zot's JSON config file")
    serve = commands.add_parser(
        "serve", help="run the registry in the foreground (through twistd)"
    )
    serve.add_argument("config", metavar="FILE", help="zot's JSON config file")
    gc = commands.add_parser(
        "gc", help="collect garbage once in a stopped registry's storage root"
    )
    gc.add_argument(
        "config", metavar="FILE|ROOT", help="zot's JSON config file, or a storage root"
    )
    gc.add_argument(
        "--delay", metavar="DURATION", default=None,
        help="keep what is younger than this (a Go duration; default: the "
        "config's storage.gcDelay, else 1h)",
    )
    gc.add_argument(
        "--force", action="store_true",
        help="run even if something answers on the config's address and port",
    )
    scrub = commands.add_parser(
        "scrub", help="check every blob and manifest of a stopped registry's storage"
    )
    scrub.add_argument("config", metavar="FILE", help="zot's JSON config file")
    scrub.add_argument(
        "--force", action="store_true",
        help="run even if something answers on the config's address and port",
    )
    return parser


def _serverAnswers(config) -> bool:
    """
    Whether something accepts connections on the config's address and port
    (then the registry probably runs, and offline maintenance is refused, as
    zot's C{scrub} refuses).
    """
    import socket

    address = config.http.address
    if address in ("0.0.0.0", "", "::"):
        address = "127.0.0.1"
    if not config.http.port:
        return False
    try:
        with socket.create_connection((address, config.http.port), timeout=1):
            return True
    except OSError:
        return False


def _offlineConfig(path: str, force: bool):
    """
    Load C{path} for an offline command.

    @return: the config, or an exit status after printing why not.
    """
    try:
        config = loadConfig(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    if config.storage.s3 is not None:
        # Checked before the port, so that --force cannot make these walk
        # the local rootDirectory, which holds none of the data.
        print(
            f"zot: {path}: storage.storageDriver is s3: the offline gc and scrub work "
            "on local storage only (on s3 the running cluster's leader collects "
            "garbage; scrub is not supported there yet)",
            file=sys.stderr,
        )
        return 1
    if not force and _serverAnswers(config):
        print(
            f"zot: {config.http.address}:{config.http.port} answers: stop the "
            "registry first (or --force)",
            file=sys.stderr,
        )
        return 1
    return config


def _storeRoots(config) -> list:
    """
    C{(root, settings)} of the default store and of each
    C{storage.subPaths} entry (C{settings} has C{gcDelay} and C{retention}).
    """
    roots = [(config.storage.rootDirectory, config.storage)]
    for _, settings in sorted(config.storage.subPaths.items()):
        roots.append((settings.rootDirectory, settings))
    return roots


def _gc(path: str, delay: "str | None", force: bool) -> int:
    """
    One garbage collection of every repository of every store root, now,
    with each root's C{gcDelay} and C{retention} (what the running
    registry's collector does in one round).
    """
    from zotwist.config import parseDuration
    from zotwist.storage.gc import collectRepositoryBlocking, describeEvents
    from zotwist.storage.retention import needsTimes, rulesFor
    from zotwist.storage.scrub import listRepositories
    from zotwist.storage.tagtimes import TagTimes

    if os.path.isdir(path):
        roots = [(os.path.abspath(path), 3600.0, None)]
    else:
        config = _offlineConfig(path, force)
        if isinstance(config, int):
            return config
        roots = [(root, settings.gcDelay, settings.retention)
                 for root, settings in _storeRoots(config)]
    if delay is not None:
        try:
            seconds = parseDuration(delay)
        except ValueError as e:
            print(f"zot: --delay: {e}", file=sys.stderr)
            return 2
        roots = [(root, seconds, retention) for root, _, retention in roots]
    import time

    for root, seconds, retention in roots:
        now = time.time()
        journal = TagTimes(root, runner=None)
        manifests = blobs = freed = uploads = tags = 0
        for name in listRepositories(root):
            times = None
            if retention is not None and needsTimes(retention, name):
                times = journal._load(name)
            rules = rulesFor(retention, name, now, seconds, times)
            result = collectRepositoryBlocking(
                os.path.join(root, *name.split("/")), now - seconds, rules=rules
            )
            for format, fields in describeEvents(name, result, rules):
                print(format.format(**fields))
            manifests += len(result.manifests)
            tags += len(result.tags)
            blobs += len(result.blobs)
            freed += result.bytes
            uploads += result.uploads
            if result.skipped:
                print(f"{name}: blobs left alone: {result.skipped}", file=sys.stderr)
        removedTags = f"{tags} tags, " if tags else ""
        print(
            f"{root}: removed {removedTags}{manifests} manifests, {blobs} blobs "
            f"({freed} bytes), {uploads} stale uploads"
        )
    return 0


def _scrub(path: str, force: bool) -> int:
    """
    Check every blob and manifest of every store root; corrupt blobs are
    moved aside.

    @return: 0 when the storage is sound, 1 when damage was found.
    """
    from zotwist.storage.scrub import scrubRootBlocking

    config = _offlineConfig(path, force)
    if isinstance(config, int):
        return config
    found = 0
    for root, _ in _storeRoots(config):
        problems = scrubRootBlocking(root)
        for problem in problems:
            print(problem)
        if not problems:
            print(f"{root}: ok")
        found += len(problems)
    if found:
        print(f"zot: scrub found {found} problems", file=sys.stderr)
        return 1
    return 0


def _version() -> int:
    """
    Print the versions a bug report needs.
    """
    import zotwist

    print(
        f"zotwist {zotwist.__version__} "
        f"(OCI distribution-spec {zotwist.DIST_SPEC_VERSION})"
    )
    return 0


def _verify(path: str) -> int:
    """
    Load C{path} as C{serve} would, and report.

    @return: 0 when the registry would start with it, else 1.  The error is
        one line on standard error; C{"FILE: ok"} and any warnings go to
        standard output.
    """
    try:
        config = loadConfig(path)
        checkSecurityConfig(config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{path}: ok")
    for warning in config.warnings:
        print(f"{path}: warning: {warning}")
    return 0


def _serve(path: str) -> int:
    """
    Check the config, then replace this process with twistd serving it.

    Checking first gives the same one-line error as C{verify} before any of
    twistd's start-up output.

    @return: 1 if the config is refused or twistd cannot be started; when
        it starts, this function does not return.
    """
    try:
        checkSecurityConfig(loadConfig(path))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    argv = [
        sys.executable,
        "-c",
        _TWISTD,
        "-n",
        "--pidfile=",
        "zot",
        "--config",
        os.path.abspath(path),
    ]
    try:
        _execv(sys.executable, argv)
    except OSError as e:
        print(f"zot: cannot start twistd: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: "list[str] | None" = None) -> int:
    """
    Run the C{zot} command.

    @param argv: the arguments after the program name; L{None} means
        C{sys.argv[1:]}.
    @return: the exit status (argparse's own usage errors give 2).
    """
    parser = _parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:
        # argparse exits on --help and on usage errors; callers get a status.
        return e.code if isinstance(e.code, int) else 0
    if options.version:
        return _version()
    if options.command == "verify":
        return _verify(options.config)
    if options.command == "serve":
        return _serve(options.config)
    if options.command == "gc":
        return _gc(options.config, options.delay, options.force)
    if options.command == "scrub":
        return _scrub(options.config, options.force)
    parser.print_usage(sys.stderr)
    print(
        "zot: error: a command is required (verify, serve, gc, scrub) or -v",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
