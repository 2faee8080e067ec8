"""
Tests for L{zotwist.cli}, the C{zot} command: exit codes and what it prints.
"""

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

import zotwist
from zotwist import cli

#: The checkout, so a child Python imports this zotwist.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CLITestCase(SynchronousTestCase):
    """
    Helpers to run L{cli.main} and to write config files.
    """

    def zot(self, *argv: str) -> "tuple[int, str, str]":
        """
        Run C{zot argv...} in this process.

        @return: the exit status, standard output and standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = cli.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def writeConfig(self, document: dict) -> str:
        """
        Write C{document} as a config file in a fresh directory.

        @return: the file's absolute path, which child processes can use.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "config.json")
        with open(path, "w") as f:
            json.dump(document, f)
        return path

    def goodConfig(self, **extra) -> str:
        """
        Write a config zotwist starts with, plus C{extra} top-level keys.
        """
        root = os.path.abspath(self.mktemp())
        document = {"storage": {"rootDirectory": root}, "http": {"port": "0"}}
        document.update(extra)
        return self.writeConfig(document)


class VersionTests(CLITestCase):
    """
    C{zot -v} and C{zot --version}.
    """

    def test_version(self):
        """
        Both spellings print zotwist's version and the dist-spec version,
        and exit 0.
        """
        expected = (
            f"zotwist {zotwist.__version__} "
            f"(OCI distribution-spec {zotwist.DIST_SPEC_VERSION})\n"
        )
        for flag in ["-v", "--version"]:
            self.assertEqual(self.zot(flag), (0, expected, ""))


class VerifyTests(CLITestCase):
    """
    C{zot verify FILE} checks a config without starting anything.
    """

    def test_ok(self):
        """
        A good config prints C{FILE: ok} and exits 0, creating nothing.
        """
        path = self.goodConfig()
        status, out, err = self.zot("verify", path)
        self.assertEqual((status, out, err), (0, f"{path}: ok\n", ""))
        with open(path) as f:
            root = json.load(f)["storage"]["rootDirectory"]
        self.assertFalse(os.path.exists(root))

    def test_warnings(self):
        """
        Warnings follow the C{ok} line, one per line, and do not change the
        exit status.
        """
        path = self.goodConfig(extensions={"search": {}}, distSpecVersion="1.0.0")
        status, out, err = self.zot("verify", path)
        self.assertEqual(status, 0)
        self.assertEqual(err, "")
        self.assertEqual(
            out.splitlines(),
            [
                f"{path}: ok",
                (
                    f"{path}: warning: distSpecVersion: the config says 1.0.0, but "
                    f"the server speaks {zotwist.DIST_SPEC_VERSION} and uses that"
                ),
                (
                    f"{path}: warning: extensions.search: not implemented by "
                    "zotwist yet; ignored"
                ),
            ],
        )

    def test_error(self):
        """
        A bad config prints its one-line error on standard error, nothing on
        standard output, and exits 1.
        """
        path = self.goodConfig(http={"port": "http"})
        status, out, err = self.zot("verify", path)
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        self.assertEqual(
            err,
            f"{path}: http.port: expected a port number from 0 to 65535 (a string "
            f'such as "8080", or a number), got a string ("http")\n',
        )

    def test_refused(self):
        """
        A config asking for something not implemented yet (API keys), or
        for TLS with certificate files that do not exist, is refused by
        verify with one line, as it would be by serve.
        """
        for http, expected in [
            ({"auth": {"apikey": True}}, "http.auth.apikey: not implemented by zotwist yet"),
            ({"tls": {"cert": "c", "key": "k"}}, "http.tls.cert: cannot read"),
        ]:
            path = self.goodConfig(http=http)
            status, out, err = self.zot("verify", path)
            self.assertEqual((status, out), (1, ""))
            self.assertIn(expected, err)
            self.assertEqual(len(err.splitlines()), 1)

    def test_missingFile(self):
        """
        A missing file exits 1 with the file named.
        """
        path = os.path.abspath(self.mktemp())
        self.assertEqual(
            self.zot("verify", path),
            (1, "", f"{path}: cannot read the file: No such file or directory\n"),
        )


class UsageTests(CLITestCase):
    """
    Usage mistakes end with status 2 and a usage line, never a traceback.
    """

    def test_noCommand(self):
        """
        C{zot} alone says a command is required.
        """
        status, out, err = self.zot()
        self.assertEqual(status, 2)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("usage: zot"))
        self.assertIn("a command is required", err)

    def test_unknownCommand(self):
        """
        An unknown command is refused by the parser.
        """
        status, out, err = self.zot("frobnicate", "config.json")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("invalid choice: 'frobnicate'", err)

    def test_missingFileArgument(self):
        """
        C{zot verify} without a file is refused by the parser.
        """
        status, out, err = self.zot("verify")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("the following arguments are required: FILE", err)

    def test_help(self):
        """
        C{--help} prints the commands and exits 0.
        """
        status, out, err = self.zot("--help")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("verify", out)
        self.assertIn("serve", out)


class ServeTests(CLITestCase):
    """
    C{zot serve FILE} checks the config and hands over to twistd.
    """

    def setUp(self):
        """
        Record what would be executed instead of replacing the test process.
        """
        self.executed = []
        self.patch(cli, "_execv", lambda path, argv: self.executed.append((path, argv)))

    def test_execsTwistd(self):
        """
        A good config runs C{twistd -n --pidfile= zot --config FILE} in this
        Python, with the file made absolute.
        """
        path = self.goodConfig()
        relative = os.path.relpath(path)
        status, out, err = self.zot("serve", relative)
        self.assertEqual((status, out, err), (0, "", ""))
        self.assertEqual(
            self.executed,
            [
                (
                    sys.executable,
                    [
                        sys.executable,
                        "-c",
                        cli._TWISTD,
                        "-n",
                        "--pidfile=",
                        "zot",
                        "--config",
                        path,
                    ],
                )
            ],
        )

    def test_badConfigDoesNotStart(self):
        """
        A bad config is reported as by verify, and twistd is never started.
        """
        path = self.goodConfig(log={"level": "loud"})
        status, out, err = self.zot("serve", path)
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"{path}: log.level: expected one of", err)
        self.assertEqual(self.executed, [])

    def test_execFails(self):
        """
        If the interpreter cannot be executed, the reason is printed and the
        status is 1.
        """

        def fail(path, argv):
            """
            Fail as C{os.execv} does for a missing program.
            """
            raise FileNotFoundError(2, "No such file or directory")

        self.patch(cli, "_execv", fail)
        status, out, err = self.zot("serve", self.goodConfig())
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err, "zot: cannot start twistd: [Errno 2] No such file or directory\n"
        )


class SubprocessTests(CLITestCase):
    """
    The command run as a real process, as the console script runs it.
    """

    def python(self, *args: str) -> subprocess.CompletedProcess:
        """
        Run this Python with C{args}, importing zotwist from the checkout.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [CHECKOUT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        return subprocess.run(
            [sys.executable, *args],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=CHECKOUT,
            timeout=60,
        )

    def test_verify(self):
        """
        The entry point exits with L{cli.main}'s status: 0 and C{ok} for a
        good config, 1 and one line on standard error for a bad one.
        """
        script = "import sys; from zotwist.cli import main; sys.exit(main())"
        good = self.goodConfig()
        result = self.python("-c", script, "verify", good)
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr), (0, f"{good}: ok\n", "")
        )
        bad = self.goodConfig(htpp={})
        result = self.python("-c", script, "verify", bad)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            f'{bad}: htpp: unknown key (did you mean "http"?); zot rejects unknown keys\n',
        )

    def test_twistdBootstrap(self):
        """
        The code C{serve} hands to Python really starts twistd (asked here
        only for its version, so nothing is served).
        """
        result = self.python("-c", cli._TWISTD, "--version")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("twistd (the Twisted daemon)", result.stdout)
