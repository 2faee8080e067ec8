"""
Tests for the C{twistd zot} plugin (C{twisted/plugins/zot_plugin.py}) and
the options of L{zotwist.tap}.

The plugin is what C{conf/install.sh} and C{conf/zot.service} start, so it is
checked both through Twisted's plugin API and through a real C{twistd}
process: a packaging mistake (an C{__init__.py} in C{twisted/plugins/}, an
editable install) shows up as "Unknown command: zot" only there.
"""

import json
import os
import sys

from twisted.application.service import IService, IServiceMaker
from twisted.internet.utils import getProcessOutputAndValue
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from zotwist import tap

#: The checkout; child processes get it first on PYTHONPATH.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Runs twistd in the current interpreter, under the name twistd.
_TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def _zotPlugins() -> list:
    """
    Every plugin Twisted finds whose tapname is C{zot}.
    """
    return [maker for maker in getPlugins(IServiceMaker) if maker.tapname == "zot"]


class PluginDiscoveryTests(SynchronousTestCase):
    """
    Twisted finds exactly one C{zot} service maker, and it points at
    L{zotwist.tap}.
    """

    def test_discoverable(self):
        """
        C{getPlugins(IServiceMaker)} yields one plugin with tapname C{zot};
        it provides L{IPlugin} and L{IServiceMaker} and names zotwist.
        """
        makers = _zotPlugins()
        self.assertEqual(len(makers), 1, f"zot plugins found: {makers!r}")
        maker = makers[0]
        verifyObject(IServiceMaker, maker)
        self.assertTrue(IPlugin.providedBy(maker))
        self.assertEqual(maker.name, "zotwist")
        self.assertTrue(maker.description.strip())

    def test_pointsAtTap(self):
        """
        The plugin's options and service factory are those of
        L{zotwist.tap}, loaded lazily by module name.
        """
        (maker,) = _zotPlugins()
        self.assertEqual(maker.module, "zotwist.tap")
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)

    def test_pluginDirectoryHasNoInit(self):
        """
        C{twisted/} and C{twisted/plugins/} in the checkout have no
        C{__init__.py}: with one, Python would take the checkout's
        C{twisted/} for Twisted itself, or Twisted would skip the directory.
        """
        for directory in ("twisted", os.path.join("twisted", "plugins")):
            self.assertFalse(
                os.path.exists(os.path.join(CHECKOUT, directory, "__init__.py")),
                f"{directory}/__init__.py must not exist",
            )

    def test_oneServiceMakerInPluginModule(self):
        """
        The plugin module defines exactly one L{IServiceMaker}, so one
        plugin file means one twistd command.
        """
        import twisted.plugins.zot_plugin as module

        makers = [v for v in vars(module).values() if IServiceMaker.providedBy(v)]
        self.assertEqual([maker.tapname for maker in makers], ["zot"])


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options}: C{--config}/C{-c}, loading the file, and one-line errors.
    """

    def writeConfig(self, document) -> str:
        """
        Write C{document} (a dict, or a str written as it is) to a fresh
        C{config.json}.

        @return: its absolute path.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "config.json")
        with open(path, "w") as f:
            if isinstance(document, str):
                f.write(document)
            else:
                json.dump(document, f)
        return path

    def goodDocument(self) -> dict:
        """
        A config zotwist runs with, storing in a fresh directory.
        """
        return {
            "distSpecVersion": "1.1.1",
            "storage": {"rootDirectory": os.path.abspath(self.mktemp())},
            "http": {"address": "127.0.0.1", "port": "8181"},
            "log": {"level": "info"},
        }

    def parseError(self, argv) -> str:
        """
        Parse C{argv}, expecting L{usage.UsageError}.

        @return: its message, checked to be one non-empty line.
        """
        options = tap.Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, argv)
        message = str(error)
        self.assertTrue(message.strip(), "empty UsageError message")
        self.assertNotIn("\n", message)
        self.assertNotIn("Traceback", message)
        return message

    def test_defaultConfigPath(self):
        """
        Without C{--config}, the config is C{/etc/zot/config.json}, where
        C{conf/install.sh} and C{conf/zot.service} put it.
        """
        self.assertEqual(tap.Options()["config"], "/etc/zot/config.json")

    def test_configLoaded(self):
        """
        C{--config FILE} loads and validates FILE into
        C{options["loadedConfig"]}; the port string becomes a number.
        """
        document = self.goodDocument()
        path = self.writeConfig(document)
        options = tap.Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options["config"], path)
        loaded = options["loadedConfig"]
        self.assertEqual(loaded.storage.rootDirectory, document["storage"]["rootDirectory"])
        self.assertEqual(loaded.http.address, "127.0.0.1")
        self.assertEqual(loaded.http.port, 8181)
        self.assertEqual(loaded.log.level, "info")

    def test_shortOption(self):
        """
        C{-c FILE} is the same as C{--config FILE}.
        """
        path = self.writeConfig(self.goodDocument())
        options = tap.Options()
        options.parseOptions(["-c", path])
        self.assertEqual(options["config"], path)
        self.assertEqual(options["loadedConfig"].http.port, 8181)

    def test_shippedConfig(self):
        """
        C{conf/config.json}, the config C{conf/install.sh} installs, loads
        without warnings and says what the README promises: storage in
        C{/var/lib/zot}, C{127.0.0.1:8080}, level info.
        """
        path = os.path.join(CHECKOUT, "conf", "config.json")
        options = tap.Options()
        options.parseOptions(["--config", path])
        loaded = options["loadedConfig"]
        self.assertEqual(loaded.storage.rootDirectory, "/var/lib/zot")
        self.assertEqual((loaded.http.address, loaded.http.port), ("127.0.0.1", 8080))
        self.assertEqual(loaded.log.level, "info")
        self.assertEqual(tuple(loaded.warnings), ())

    def test_makeService(self):
        """
        L{tap.makeService} builds, without starting, a service tree with a
        child named C{http}.
        """
        path = self.writeConfig(self.goodDocument())
        options = tap.Options()
        options.parseOptions(["--config", path])
        service = tap.makeService(options)
        self.assertTrue(IService.providedBy(service))
        self.assertFalse(service.running)
        self.assertTrue(IService.providedBy(service.getServiceNamed("http")))

    def test_missingFile(self):
        """
        A config file that does not exist is a one-line usage error naming
        it.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "absent.json")
        message = self.parseError(["--config", path])
        self.assertIn(path, message)

    def test_invalidJSON(self):
        """
        A file that is not JSON is a one-line usage error naming the file.
        """
        path = self.writeConfig('{"storage": {"rootDirectory": "/tmp/x"},,}\n')
        message = self.parseError(["--config", path])
        self.assertIn(path, message)
        self.assertIn("JSON", message)

    def test_unknownKey(self):
        """
        An unknown key is refused, and the message names its key path.
        """
        document = self.goodDocument()
        document["http"]["prot"] = "8080"
        path = self.writeConfig(document)
        message = self.parseError(["--config", path])
        self.assertIn(path, message)
        self.assertIn("http.prot", message)

    def test_badPort(self):
        """
        A port that is not a number is refused, naming C{http.port}.
        """
        document = self.goodDocument()
        document["http"]["port"] = "eighty"
        message = self.parseError(["--config", self.writeConfig(document)])
        self.assertIn("http.port", message)

    def test_missingStorage(self):
        """
        A config without C{storage.rootDirectory} is refused.
        """
        document = self.goodDocument()
        del document["storage"]
        message = self.parseError(["--config", self.writeConfig(document)])
        self.assertIn("storage", message)

    def test_accessKeysRefused(self):
        """
        Keys that restrict access stop the registry from starting when they
        cannot be honoured (here: certificate and htpasswd files that do not
        exist) or are not implemented yet (policy C{conditions}), rather than
        being ignored.
        """
        settings = {
            "tls": {"cert": "/etc/zot/server.crt", "key": "/etc/zot/server.key"},
            "auth": {"htpasswd": {"path": "/etc/zot/htpasswd"}},
            "accessControl": {
                "repositories": {
                    "**": {
                        "anonymousPolicy": ["read"],
                        "policies": [{"conditions": [{"expression": "true"}]}],
                    }
                }
            },
        }
        for key, value in settings.items():
            document = self.goodDocument()
            document["http"][key] = value
            message = self.parseError(["--config", self.writeConfig(document)])
            self.assertIn(f"http.{key}", message)

    def test_bearerCertUnreadable(self):
        """
        A bearer C{cert} that cannot be read stops the registry before it
        starts, with one line naming the key and the file.
        """
        document = self.goodDocument()
        missing = os.path.abspath(self.mktemp())
        document["http"]["auth"] = {
            "bearer": {"realm": "https://auth.example/token", "service": "zot",
                       "cert": missing}
        }
        message = self.parseError(["--config", self.writeConfig(document)])
        self.assertIn("http.auth.bearer.cert", message)
        self.assertIn(missing, message)
        self.assertNotIn("\n", message)


class TwistdTests(TestCase):
    """
    The plugin through a real C{twistd} process, as C{conf/install.sh} and
    C{conf/zot.service} run it.
    """

    async def twistd(self, *args) -> tuple[int, str]:
        """
        Run C{twistd ARGS} in a child interpreter with the checkout first on
        C{PYTHONPATH}, from a directory outside the checkout.

        @return: the exit status and the combined output.
        """
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "PYTHONPATH": os.pathsep.join(
                [CHECKOUT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            ),
        }
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", _TWISTD, *args], env=env, path=directory
        )
        return code, (out + err).decode("utf-8", "replace")

    async def test_help(self):
        """
        C{twistd zot --help} finds the plugin and documents C{--config}; the
        plain C{twistd --help} lists the C{zot} command.
        """
        code, output = await self.twistd("zot", "--help")
        self.assertEqual(code, 0, output)
        self.assertIn("--config", output)
        self.assertIn("/etc/zot/config.json", output)
        self.assertNotIn("Unknown command", output)

        code, output = await self.twistd("--help")
        self.assertEqual(code, 0, output)
        self.assertRegex(output, r"(?m)^ +zot +\S")

    async def test_badConfig(self):
        """
        C{twistd -n zot --config BAD} exits non-zero before starting
        anything, with the config error on one line and no traceback.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "config.json")
        with open(path, "w") as f:
            json.dump({"storage": {"rootDirectory": directory}, "htp": {}}, f)
        code, output = await self.twistd("-n", "--pidfile=", "zot", "--config", path)
        self.assertNotEqual(code, 0, output)
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if path in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn("htp", lines[0])
