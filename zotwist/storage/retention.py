# -*- test-case-name: tests.test_retention -*-
"""
Retention (C{storage.retention}): what a garbage collection sweep may remove
from a repository beyond unreferenced blobs, decided per repository.

zot's rules, which this module follows:
 - the first policy one of whose C{repositories} globs matches the
   repository applies (the globs of C{http.accessControl});
 - tags: a policy with C{keepTags} keeps a tag when the I{first} C{keepTags}
   entry whose C{patterns} match it (regular expressions searched as Go's
   C{MatchString} does; no patterns match every tag) keeps it: an entry
   without rules keeps every tag it matched, one with rules keeps the tags
   that any rule selects among those it matched (OR):
   C{mostRecentlyPushedCount} / C{mostRecentlyPulledCount} (the N most
   recent, never-pulled tags counting as the oldest), C{pushedWithin},
   C{pulledWithin} (pulled I{or pushed} within, as zot's rule says: a tag
   just pushed is not removed for not having been pulled yet).  A tag no
   entry matches goes.  A repository no policy matches, or whose policy has
   no C{keepTags}, keeps every tag;
 - untagged manifests (C{deleteUntagged}, default true) and referrers whose
   subject is gone (C{deleteReferrers}, default false) go once older than
   C{delay} (default: C{gcDelay});
 - C{dryRun}: decide and log, remove nothing (not even untagged manifests).

A repository no policy matches keeps zotwist's garbage collection defaults
(untagged manifests and untagged referrers whose subject is gone are
collected after C{delay}), so configuring retention for some repositories
does not change what happens to the others.

A tag whose push time was never recorded (pushed before zotwist kept push
times) counts as pushed when its manifest's file was last modified, so an
upgrade does not make every old tag look ancient.  Removing a tag drops its
manifest from C{index.json} when no other tag names it (as zot does), so
its blobs are then garbage like any other, whatever C{deleteUntagged} says.

The decision is pure (L{decideTags}); L{RepositoryRules} carries one
repository's decision inputs into the collector's thread
(L{zotwist.storage.gc.collectRepositoryBlocking}), where it is applied under
the repository's index lock.
"""

import re
from dataclasses import dataclass, field

from zotwist.auth.policy import globMatch

#: What happens to untagged referrers whose subject is gone, or to every
#: such referrer, or to none.
REFERRERS_KEEP = "keep"
REFERRERS_UNTAGGED = "untagged"
REFERRERS_ALL = "all"


@dataclass
class Decision:
    """
    What a repository's policy says about its tags.

    @ivar policy: the index of the policy that applies, or L{None}.
    @ivar keep: the tags kept, each with the reason.
    @ivar delete: the tags that go, sorted, each with the reason.
    """

    policy: int | None
    keep: dict[str, str] = field(default_factory=dict)
    delete: dict[str, str] = field(default_factory=dict)


def policyFor(retention, repository: str):
    """
    @return: C{(index, policy)} of the first policy matching C{repository},
        or C{(None, None)}.
    """
    for index, policy in enumerate(retention.policies if retention else ()):
        if any(globMatch(glob, repository) for glob in policy.repositories):
            return index, policy
    return None, None


def _never(value):
    return float("-inf") if value is None else value


def _mostRecent(tags: list, times: dict, which: int, count: int) -> list:
    """
    The C{count} tags most recently pushed (C{which} 0) or pulled (1); a
    tag without that time counts as the oldest (zot sorts the zero time
    last), ties broken by the other time, then by name.
    """
    other = 1 - which

    def key(tag):
        entry = times.get(tag, (None, None))
        return (-_never(entry[which]), -_never(entry[other]), tag)

    return sorted(tags, key=key)[:count]


def _within(when, now: float, seconds: float) -> bool:
    return when is not None and when > now - seconds


def compilePatterns(policy) -> list:
    """
    The compiled C{patterns} of each C{keepTags} entry of C{policy}.

    @raise re.error: a pattern Python's C{re} does not take.
    """
    return [[re.compile(p) for p in rule.patterns] for rule in policy.keepTags]


def decideTags(policy, policyIndex, tags, times: dict, now: float) -> Decision:
    """
    Apply one policy's C{keepTags} to a repository's tags.

    @param policy: the L{zotwist.config.RetentionPolicy} that applies, or
        L{None}.
    @param tags: the repository's tags.
    @param times: C{{tag: (pushed, pulled)}}, seconds since the epoch or
        L{None}.
    @param now: the current time.
    """
    tags = sorted(tags)
    if policy is None or not policy.keepTags:
        reason = "no retention policy" if policy is None else "policy has no keepTags"
        return Decision(policyIndex, {t: reason for t in tags}, {})
    try:
        compiled = compilePatterns(policy)
    except re.error as e:
        # A pattern Go's RE2 takes and Python's re does not: removing
        # nothing is the safe reading.
        return Decision(policyIndex, {t: f"a pattern does not compile ({e})" for t in tags}, {})
    groups: dict[int, list] = {}
    decision = Decision(policyIndex)
    for tag in tags:
        for number, patterns in enumerate(compiled):
            if not patterns or any(p.search(tag) for p in patterns):
                groups.setdefault(number, []).append(tag)
                break
        else:
            decision.delete[tag] = "matches no keepTags patterns"
    for number, matched in groups.items():
        rule = policy.keepTags[number]
        chosen: dict[str, str] = {}

        def choose(selected, why):
            for tag in selected:
                chosen.setdefault(tag, f"keepTags[{number}]: {why}")

        rules = 0
        if rule.mostRecentlyPulledCount:
            rules += 1
            choose(_mostRecent(matched, times, 1, rule.mostRecentlyPulledCount),
                   f"among the {rule.mostRecentlyPulledCount} most recently pulled")
        if rule.mostRecentlyPushedCount:
            rules += 1
            choose(_mostRecent(matched, times, 0, rule.mostRecentlyPushedCount),
                   f"among the {rule.mostRecentlyPushedCount} most recently pushed")
        if rule.pulledWithin is not None:
            rules += 1
            choose([t for t in matched
                    if _within(times.get(t, (None, None))[1], now, rule.pulledWithin)
                    or _within(times.get(t, (None, None))[0], now, rule.pulledWithin)],
                   f"pulled or pushed within {rule.pulledWithin:g} s")
        if rule.pushedWithin is not None:
            rules += 1
            choose([t for t in matched
                    if _within(times.get(t, (None, None))[0], now, rule.pushedWithin)],
                   f"pushed within {rule.pushedWithin:g} s")
        for tag in matched:
            if not rules:
                decision.keep[tag] = f"keepTags[{number}]: patterns match"
            elif tag in chosen:
                decision.keep[tag] = chosen[tag]
            else:
                decision.delete[tag] = f"keepTags[{number}]: meets none of its rules"
    decision.delete = dict(sorted(decision.delete.items()))
    return decision


@dataclass(frozen=True)
class RepositoryRules:
    """
    What one sweep of one repository may remove from its C{index.json}.

    @ivar cutoff: untagged manifests and orphaned referrers whose bytes were
        last modified before this time may go.
    @ivar deleteUntagged: untagged manifests (not referrers, not children
        of an index) may go.
    @ivar referrers: which referrers whose subject is gone may go:
        L{REFERRERS_KEEP}, L{REFERRERS_UNTAGGED} or L{REFERRERS_ALL}.
    @ivar policy: the retention policy whose C{keepTags} applies, or L{None}
        (every tag stays).
    @ivar policyIndex: its index in C{retention.policies}.
    @ivar times: C{{tag or digest: (pushed, pulled)}} as recorded.
    @ivar seen: C{{tag: digest}} as the index was when L{times} were read,
        or L{None} (no guard).  A tag the sweep finds pointing elsewhere, or
        not in it, was pushed meanwhile: its push time may be missing from
        L{times}, so it stays this round.
    @ivar now: the time of the decision.
    @ivar dryRun: decide and report, change nothing.
    @ivar retention: these rules come from C{storage.retention} (for the log).
    """

    cutoff: float
    deleteUntagged: bool = True
    referrers: str = REFERRERS_UNTAGGED
    policy: object = None
    policyIndex: int | None = None
    times: dict = field(default_factory=dict)
    seen: dict | None = None
    now: float = 0.0
    dryRun: bool = False
    retention: bool = False

    def decide(self, tags: dict, pushedFallback) -> Decision:
        """
        Which tags go.  Blocking when C{pushedFallback} is.

        @param tags: C{{tag: digest}}.
        @param pushedFallback: C{digest -> time or None}, the push time of a
            tag whose push was never recorded.
        """
        if self.policy is None:
            return Decision(self.policyIndex, {t: "no keepTags" for t in tags}, {})
        times = {}
        fresh = {}
        for tag, digest in tags.items():
            if self.seen is not None and self.seen.get(tag) != digest:
                fresh[tag] = "pushed while the sweep started"
                continue
            pushed, pulled = self.times.get(tag, (None, None))
            if pushed is None:
                pushed = pushedFallback(digest)
            times[tag] = (pushed, pulled)
        decision = decideTags(self.policy, self.policyIndex, list(times), times, self.now)
        decision.keep.update(fresh)
        return decision


def rulesFor(retention, repository: str, now: float, gcDelay: float,
             times: dict | None = None, seen: dict | None = None) -> RepositoryRules:
    """
    The rules of one repository's sweep at C{now}.

    @param retention: C{storage.retention}, or L{None}.
    @param gcDelay: the store's C{gcDelay}, in seconds.
    @param times: the repository's recorded push and pull times (needed
        only when L{needsTimes} says so).
    @param seen: see L{RepositoryRules.seen}.
    """
    if retention is None:
        return RepositoryRules(cutoff=now - gcDelay, now=now)
    delay = retention.delay if retention.delay is not None else gcDelay
    index, policy = policyFor(retention, repository)
    if policy is None:
        return RepositoryRules(cutoff=now - delay, now=now, dryRun=retention.dryRun,
                               retention=True)
    return RepositoryRules(
        cutoff=now - delay,
        deleteUntagged=policy.deleteUntagged,
        referrers=REFERRERS_ALL if policy.deleteReferrers else REFERRERS_KEEP,
        policy=policy if policy.keepTags else None,
        policyIndex=index,
        times=dict(times or {}),
        seen=None if seen is None else dict(seen),
        now=now,
        dryRun=retention.dryRun,
        retention=True,
    )


def needsTimes(retention, repository: str) -> bool:
    """
    Whether deciding for C{repository} needs its push and pull times.
    """
    _, policy = policyFor(retention, repository)
    return policy is not None and bool(policy.keepTags)


__all__ = [
    "Decision", "RepositoryRules", "decideTags", "policyFor", "rulesFor", "needsTimes",
    "compilePatterns", "REFERRERS_KEEP", "REFERRERS_UNTAGGED", "REFERRERS_ALL",
]
