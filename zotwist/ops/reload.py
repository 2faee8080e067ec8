# -*- test-case-name: tests.test_ops_reload -*-
"""
Reloading the config while the registry runs (C{SIGHUP}).

L{ReloadableSettings} holds the config in force and knows who acts on
which keys.  L{ReloadableSettings.reload} compares a newly loaded config
with it, key by key:

  - keys some part of the registry applies live (C{log.level},
    C{log.output}, and whatever a subscriber registered) are handed to
    their subscribers and take effect;
  - every other changed key (C{http.address}, C{http.port},
    C{storage.rootDirectory}, ...) is reported in the log and keeps its old
    value until a restart: the config in force never claims something the
    process does not do.

A file that does not load (bad JSON, a bad key, a refused key) changes
nothing: the error is logged and the old config stays.

How other parts hook in (the authentication and access-control code, for
C{http.auth.htpasswd}, C{http.auth} and C{http.accessControl})::

    settings.subscribe(
        ("http.auth", "http.accessControl"),
        apply=lambda new, old: checker.useConfig(new),
        prepare=lambda new: checker.check(new),   # optional; raise to veto
    )

C{prepare(newConfig)} runs for every subscriber concerned before anything
changes; if one raises, the reload is refused as a whole and the old config
stays.  Then C{apply(newConfig, oldConfig)} runs for each.  A subscriber is
concerned when a changed key is one of its paths or lies below one.
"""

import dataclasses

from twisted.application.service import Service
from twisted.logger import Logger

from zotwist.config import ConfigError, loadConfig

#: Fields of L{zotwist.config.Config} that are bookkeeping, not settings.
_BOOKKEEPING = frozenset({"warnings", "source", "raw"})


def changedKeys(old, new, path: str = "") -> list[str]:
    """
    The dotted paths of the settings that differ between two configs (or
    two sections), as deep as both sides are sections.
    """
    if old == new:
        return []
    if (
        dataclasses.is_dataclass(old)
        and dataclasses.is_dataclass(new)
        and type(old) is type(new)
    ):
        changed = []
        for f in dataclasses.fields(old):
            if not path and f.name in _BOOKKEEPING:
                continue
            child = f"{path}.{f.name}" if path else f.name
            changed.extend(changedKeys(getattr(old, f.name), getattr(new, f.name), child))
        return changed
    return [path]


def _covers(prefixes, key: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def _merge(old, new, path: str, live) -> object:
    """
    C{new}, except where a setting that cannot change live differs: there,
    C{old}'s value.
    """
    if old == new or (path and live(path)):
        return new
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new) and type(old) is type(new):
        values = {}
        for f in dataclasses.fields(old):
            child = f"{path}.{f.name}" if path else f.name
            if not path and f.name in _BOOKKEEPING:
                values[f.name] = getattr(new, f.name)
            else:
                values[f.name] = _merge(getattr(old, f.name), getattr(new, f.name), child, live)
        return dataclasses.replace(new, **values)
    return old


@dataclasses.dataclass(frozen=True)
class ReloadResult:
    """
    What a reload did.

    @ivar applied: changed keys now in force.
    @ivar kept: changed keys that need a restart; their old values stay.
    @ivar error: why the new config was refused (nothing changed), or
        L{None}.
    """

    applied: tuple = ()
    kept: tuple = ()
    error: str | None = None


class ReloadableSettings:
    """
    The config in force, and the subscribers that apply changes to it.

    @ivar current: the L{zotwist.config.Config} in force.
    """

    _log = Logger()

    def __init__(self, config):
        self.current = config
        self._subscribers: list = []

    def subscribe(self, paths, apply, prepare=None) -> None:
        """
        Apply changes to C{paths} (dotted key paths, such as C{"log.level"}
        or C{"http.accessControl"}, each covering the keys below it) live.

        @param apply: C{apply(newConfig, oldConfig)}, called after a reload
            that changed one of C{paths}.
        @param prepare: C{prepare(newConfig)}, called first; raise to refuse
            the reload.
        """
        self._subscribers.append((tuple(paths), apply, prepare))

    def livePaths(self) -> tuple:
        """
        Every key path some subscriber applies live.
        """
        return tuple(p for paths, _, _ in self._subscribers for p in paths)

    def reload(self, new) -> ReloadResult:
        """
        Put C{new} in force as far as it can be without a restart, and log
        what changed.
        """
        old = self.current
        livePaths = self.livePaths()

        def isLive(key):
            return _covers(livePaths, key)

        changed = changedKeys(old, new)
        applied = tuple(k for k in changed if isLive(k))
        kept = tuple(k for k in changed if not isLive(k))
        merged = _merge(old, new, "", isLive)
        concerned = [
            (apply, prepare) for paths, apply, prepare in self._subscribers
            if any(_covers(paths, key) for key in applied)
        ]
        for _, prepare in concerned:
            if prepare is None:
                continue
            try:
                prepare(merged)
            except Exception as e:
                self._log.error(
                    "Config {source} not reloaded, the old one stays: {error}",
                    source=new.source, error=e,
                )
                return ReloadResult(error=str(e))
        self.current = merged
        for apply, _ in concerned:
            try:
                apply(merged, old)
            except Exception:
                self._log.failure("Applying the reloaded config failed")
        for warning in new.warnings:
            self._log.warn("config {source}: {warning}", source=new.source, warning=warning)
        if kept:
            self._log.warn(
                "Config {source} changes {keys}, which need a restart; "
                "the running values stay until then",
                source=new.source, keys=", ".join(kept),
            )
        self._log.info(
            "Config {source} reloaded: {count} settings changed live ({keys})",
            source=new.source, count=len(applied), keys=", ".join(applied) or "none",
        )
        return ReloadResult(applied=applied, kept=kept)

    def reloadFile(self, path: str | None = None) -> ReloadResult:
        """
        Load the config file again (by default the one in force came from)
        and L{reload} it; a file that does not load changes nothing.
        """
        path = self.current.source if path is None else path
        try:
            new = loadConfig(path)
        except ConfigError as e:
            self._log.error("Config not reloaded, the old one stays: {error}", error=str(e))
            return ReloadResult(error=str(e))
        return self.reload(new)


class ReloadService(Service):
    """
    What C{SIGHUP} does: reopen the log files, then reload the config.

    @ivar settings: the L{ReloadableSettings}.
    """

    _log = Logger()

    def __init__(self, settings: ReloadableSettings, logs=None):
        self.settings = settings
        self._logs = logs
        self.setName("reload")

    def reload(self) -> ReloadResult:
        """
        Reopen the logs and reload the config file.
        """
        self._log.info("Reloading: reopening log files and re-reading {source}",
                       source=self.settings.current.source)
        if self._logs is not None:
            self._logs.reopen()
        return self.settings.reloadFile()


__all__ = ["ReloadableSettings", "ReloadService", "ReloadResult", "changedKeys"]
