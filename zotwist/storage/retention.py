# -*- test-case-name: tests.test_retention -*-
"""
Tag retention (C{storage.retention}): which tags of a repository its policy
keeps, and applying that (or, with C{dryRun}, logging what would go).

zot's rules, for tags:
 - the first policy one of whose C{repositories} globs matches the
   repository applies (the globs of C{http.accessControl}); a repository no
   policy matches keeps every tag, and so does a policy without C{keepTags};
 - otherwise a tag is kept when any C{keepTags} rule keeps it (OR): a rule
   considers the tags one of its C{patterns} (regular expressions, searched
   as Go's C{MatchString} does; none means every tag) matches, and keeps all
   of them when it has no other criterion, else those among the
   C{mostRecentlyPushedCount} most recently pushed, the
   C{mostRecentlyPulledCount} most recently pulled, pushed within
   C{pushedWithin}, or pulled within C{pulledWithin};
 - every other tag goes: its tag is removed (the manifest, once untagged,
   and its blobs are garbage collection's business).

Times come from L{zotwist.storage.tagtimes.TagTimes}; a tag whose push was
never recorded (pushed before zotwist kept times) counts as pushed when its
manifest's file was last modified, so an upgrade does not make every old tag
look ancient.  Untagged manifests and referrers (C{deleteUntagged},
C{deleteReferrers}, C{keepUntagged}, C{delay}) are left to garbage
collection.
"""

import os
import re
from dataclasses import dataclass, field

from twisted.logger import Logger

from zotwist.auth.policy import globMatch

_log = Logger()


@dataclass
class Decision:
    """
    What a repository's policy says about its tags.

    @ivar policy: the index of the policy that applies, or L{None}.
    @ivar keep: the tags kept, each with the first reason found.
    @ivar delete: the tags that go, sorted.
    """

    policy: int | None
    keep: dict[str, str] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)


def policyFor(retention, repository: str):
    """
    @return: C{(index, policy)} of the first policy matching C{repository},
        or C{(None, None)}.
    """
    for index, policy in enumerate(retention.policies if retention else ()):
        if any(globMatch(glob, repository) for glob in policy.repositories):
            return index, policy
    return None, None


def _topBy(tags, times: dict, which: int, count: int) -> set:
    if count <= 0:
        return set()
    known = [t for t in tags if times.get(t, (None, None))[which] is not None]
    known.sort(key=lambda t: (-times[t][which], t))
    return set(known[:count])


def decide(retention, repository: str, tags, times: dict, now: float) -> Decision:
    """
    Apply the retention config to one repository's tags.

    @param tags: the repository's tags.
    @param times: C{{tag: (pushed, pulled)}}, seconds since the epoch or
        L{None}.
    @param now: the current time.
    """
    tags = sorted(tags)
    index, policy = policyFor(retention, repository)
    if policy is None or not policy.keepTags:
        reason = "no policy" if policy is None else "policy keeps every tag"
        return Decision(index, {t: reason for t in tags}, [])
    keep: dict[str, str] = {}
    try:
        compiled = [[re.compile(p) for p in rule.patterns] for rule in policy.keepTags]
    except re.error as e:
        # A pattern Go's RE2 takes and Python's re does not: removing
        # nothing is the safe reading.
        _log.warn("retention: policy {policy}: pattern does not compile ({e}); keeping"
                  " every tag of {repository}", policy=index, e=e, repository=repository)
        return Decision(index, {t: "pattern does not compile" for t in tags}, [])
    for number, rule in enumerate(policy.keepTags):
        patterns = compiled[number]
        matched = [t for t in tags if not patterns or any(p.search(t) for p in patterns)]
        criteria = []
        if rule.mostRecentlyPushedCount:
            criteria.append((
                _topBy(matched, times, 0, rule.mostRecentlyPushedCount),
                f"among the {rule.mostRecentlyPushedCount} most recently pushed",
            ))
        if rule.mostRecentlyPulledCount:
            criteria.append((
                _topBy(matched, times, 1, rule.mostRecentlyPulledCount),
                f"among the {rule.mostRecentlyPulledCount} most recently pulled",
            ))
        for which, within, word in ((0, rule.pushedWithin, "pushed"),
                                    (1, rule.pulledWithin, "pulled")):
            if within is not None:
                recent = {
                    t for t in matched
                    if times.get(t, (None, None))[which] is not None
                    and now - times[t][which] <= within
                }
                criteria.append((recent, f"{word} within {within:g} s"))
        for tag in matched:
            if tag in keep:
                continue
            if not criteria:
                keep[tag] = f"keepTags[{number}] matches"
                continue
            for chosen, why in criteria:
                if tag in chosen:
                    keep[tag] = f"keepTags[{number}]: {why}"
                    break
    return Decision(index, keep, [t for t in tags if t not in keep])


async def tagTimes(store, repository: str, tags: dict) -> dict:
    """
    The push and pull times of C{tags} (C{{tag: descriptor}}): recorded
    ones, and for a push never recorded the manifest file's mtime.
    """
    recorded = await store.tagTimes.times(repository)
    times = {}
    for tag, descriptor in tags.items():
        pushed, pulled = recorded.get(tag, (None, None))
        if pushed is None:
            try:
                pushed = os.stat(store._blobPath(repository, descriptor["digest"])).st_mtime
            except (OSError, KeyError, ValueError):
                pushed = None
        times[tag] = (pushed, pulled)
    return times


async def applyRetention(store, retention, now: float, dryRun: bool | None = None) -> dict:
    """
    Decide for every repository and remove the tags that go, or only log
    them when C{dryRun} (by default the config's C{dryRun}).

    @return: C{{repository: [tags removed or that would be]}} for the
        repositories that lose any.
    """
    if retention is None or not retention.policies:
        return {}
    dryRun = retention.dryRun if dryRun is None else dryRun
    gone = {}
    for repository in await store.catalog():
        index = await store._index(repository)
        if index is None:
            continue
        times = await tagTimes(store, repository, dict(index.tags))
        decision = decide(retention, repository, index.tags, times, now)
        if not decision.delete:
            continue
        gone[repository] = decision.delete
        for tag in decision.delete:
            if dryRun:
                _log.info(
                    "retention (dry run): would remove tag {repository}:{tag}"
                    " (policy {policy})",
                    repository=repository, tag=tag, policy=decision.policy,
                )
                continue
            try:
                await store.deleteManifest(repository, tag)
            except Exception as e:
                _log.warn("retention: removing {repository}:{tag} failed: {e}",
                          repository=repository, tag=tag, e=e)
                continue
            _log.info("retention: removed tag {repository}:{tag} (policy {policy})",
                      repository=repository, tag=tag, policy=decision.policy)
    return gone


__all__ = ["Decision", "decide", "policyFor", "tagTimes", "applyRetention"]
