"""
Tests for L{zotwist.ops.reload}: what a reloaded config changes, and
C{SIGHUP} to a running C{twistd zot} (log level, a broken config, log
rotation).
"""

import dataclasses
import json
import os
import signal

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.procsupport import RegistryProcess, expect, request, waitUntil
from zotwist.config import parseConfig
from zotwist.ops.reload import ReloadableSettings, changedKeys


def _config(**sections):
    document = {"storage": {"rootDirectory": "/srv/zot"}}
    document.update(sections)
    return parseConfig(document, "zot.json")


class SettingsTests(SynchronousTestCase):
    """
    L{ReloadableSettings} on its own.
    """

    def test_changedKeys(self):
        """
        Differences are named down to the leaf key; a section appearing
        where there was none is named as a whole.
        """
        old = _config()
        new = _config(
            http={"port": "5000"},
            log={"level": "warn"},
            extensions={"metrics": {"enable": True}},
        )
        self.assertEqual(
            changedKeys(old, new), ["http.port", "log.level", "extensions"]
        )
        self.assertEqual(changedKeys(old, _config()), [])

    def test_liveAndKept(self):
        """
        A key with a subscriber changes live and the subscriber gets the
        new config; a key nobody applies live keeps its running value in
        the config in force, and is reported.
        """
        settings = ReloadableSettings(_config())
        applied = []
        settings.subscribe(("log.level",), apply=lambda new, old: applied.append(new.log.level))
        result = settings.reload(_config(http={"port": "5000"}, log={"level": "error"}))
        self.assertEqual((result.applied, result.kept, result.error),
                         (("log.level",), ("http.port",), None))
        self.assertEqual(applied, ["error"])
        self.assertEqual(settings.current.log.level, "error")
        self.assertEqual(settings.current.http.port, 8080)
        self.assertEqual(settings.current.source, "zot.json")

    def test_subscriberPaths(self):
        """
        A subscriber for a section is concerned by changes below it, and
        only by those: the hook the authentication and access-control code
        uses for C{http.auth} and C{http.accessControl}.
        """
        old = _config()
        settings = ReloadableSettings(old)
        calls = []
        settings.subscribe(("http.realm",), apply=lambda new, old: calls.append("realm"))
        settings.subscribe(("log",), apply=lambda new, old: calls.append("log"))
        settings.reload(dataclasses.replace(old, http=dataclasses.replace(old.http, realm="x")))
        self.assertEqual(calls, ["realm"])
        self.assertEqual(settings.current.http.realm, "x")

    def test_prepareVetoes(self):
        """
        A subscriber's C{prepare} that raises refuses the whole reload: no
        C{apply} runs and the old config stays in force.
        """
        old = _config()
        settings = ReloadableSettings(old)
        applied = []

        def prepare(new):
            raise ValueError("htpasswd file unreadable")

        settings.subscribe(("log.level",), apply=lambda n, o: applied.append(1), prepare=prepare)
        settings.subscribe(("log.output",), apply=lambda n, o: applied.append(2))
        result = settings.reload(_config(log={"level": "warn", "output": "/tmp/x"}))
        self.assertEqual(result.error, "htpasswd file unreadable")
        self.assertEqual(applied, [])
        self.assertIs(settings.current, old)

    def test_badFile(self):
        """
        A file that does not load leaves everything as it was.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump({"storage": {"rootDirectory": "/srv/zot"}}, f)
        settings = ReloadableSettings(parseConfig({"storage": {"rootDirectory": "/srv/zot"}}, path))
        old = settings.current
        with open(path, "w") as f:
            f.write('{"storage": ')
        result = settings.reloadFile()
        self.assertIn("invalid JSON", result.error)
        self.assertIs(settings.current, old)


class HangUpTests(TestCase):
    """
    C{SIGHUP} to a running C{twistd zot}.
    """

    timeout = 60

    def startProcess(self, level: str) -> RegistryProcess:
        """
        A registry logging to a C{log.output} file at C{level}.
        """
        registry = RegistryProcess(self, {"log": {"level": level}})
        registry.output = os.path.join(registry.base, "zot.json.log")
        with open(registry.configPath) as f:
            registry.document = json.load(f)
        self.rewrite(registry, level)
        return registry

    def rewrite(self, registry, level: str, **http) -> None:
        """
        Rewrite the config file with C{level} (and C{http} keys).
        """
        document = json.loads(json.dumps(registry.document))
        document["log"] = {"level": level, "output": registry.output}
        document["http"].update(http)
        with open(registry.configPath, "w") as f:
            json.dump(document, f)

    def accessPaths(self, path: str) -> list[str]:
        """
        The paths of the access events in C{path}.
        """
        try:
            with open(path) as f:
                events = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [e["path"] for e in events if e.get("log_namespace") == "zotwist.access"]

    async def get(self, registry, path: str) -> None:
        """
        GET C{path} (a 404 is fine: it is the access line that matters).
        """
        response = await request(registry, "GET", registry.url + path)
        await response.content()

    async def hangUp(self, registry, marker: str) -> None:
        """
        Send C{SIGHUP} and wait until C{marker} appears in the server's
        output, once more than before.
        """
        before = registry.log().count(marker)
        registry.signal(signal.SIGHUP)
        await waitUntil(
            lambda: registry.log().count(marker) > before, 10,
            lambda: f"no {marker!r} after SIGHUP; log:\n{registry.log()[-3000:]}",
        )

    async def test_levelChangesAndBadConfigIsKeptOut(self):
        """
        With C{log.level: error} no access line is written; after the
        config says C{info} and C{SIGHUP}, they are.  A broken config then
        is reported and changes nothing (the level stays C{info}), and a
        changed port is reported and kept: the registry answers where it
        did.
        """
        registry = self.startProcess("error")
        await registry.start()
        await self.get(registry, "/v2/quiet/tags/list")
        self.rewrite(registry, "info")
        await self.hangUp(registry, "reloaded: 1 settings changed live (log.level)")
        await self.get(registry, "/v2/loud/tags/list")
        self.assertEqual(self.accessPaths(registry.output), ["/v2/loud/tags/list"])

        with open(registry.configPath, "w") as f:
            f.write('{"storage": {"rootDirectory": ')
        await self.hangUp(registry, "Config not reloaded, the old one stays")
        self.assertTrue(registry.running)
        await self.get(registry, "/v2/still/tags/list")
        self.assertEqual(self.accessPaths(registry.output)[-1], "/v2/still/tags/list")

        self.rewrite(registry, "info", port="1")
        await self.hangUp(registry, "changes http.port, which need a restart")
        await self.get(registry, "/v2/same/tags/list")
        self.assertEqual(self.accessPaths(registry.output)[-1], "/v2/same/tags/list")
        self.assertEqual(await registry.stop(), 0)

    async def test_rotation(self):
        """
        Rename the log file, send C{SIGHUP}: the lines written before the
        signal are in the renamed file, the later ones in a new file of
        the configured name, and none is lost or doubled.
        """
        registry = self.startProcess("info")
        await registry.start()
        for i in range(3):
            await self.get(registry, f"/v2/before{i}/tags/list")
        os.rename(registry.output, registry.output + ".1")
        await self.get(registry, "/v2/between/tags/list")
        await self.hangUp(registry, "reloaded: 0 settings changed live")
        for i in range(3):
            await self.get(registry, f"/v2/after{i}/tags/list")
        old = self.accessPaths(registry.output + ".1")
        new = self.accessPaths(registry.output)
        self.assertEqual(
            [p for p in old if p != "/v2/"],
            [f"/v2/before{i}/tags/list" for i in range(3)] + ["/v2/between/tags/list"],
        )
        self.assertEqual(new, [f"/v2/after{i}/tags/list" for i in range(3)])
        response = await request(registry, "GET", registry.url + "/readyz")
        await expect(response, 200, "readyz after rotation")
