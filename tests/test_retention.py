"""
Tests for L{zotwist.storage.retention}: which tags a repository's
retention policy keeps, and removing (or, in a dry run, logging) the rest.
"""

import os

from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.test_local import StoreCase
from zotwist.config import parseConfig
from zotwist.storage.retention import applyRetention, decide, policyFor

HOUR = 3600.0
NOW = 1_000_000.0


def retention(policies, dryRun=False):
    """
    C{storage.retention} parsed from its JSON form, as the config loader
    does.
    """
    document = {
        "storage": {
            "rootDirectory": "/srv/zot",
            "retention": {"dryRun": dryRun, "delay": "24h", "policies": policies},
        },
    }
    return parseConfig(document).storage.retention


class DecideTests(SynchronousTestCase):
    """
    L{decide} on tags with given push and pull times.
    """

    times = {
        # tag: (pushed, pulled)
        "v1": (NOW - 10 * HOUR, NOW - 1 * HOUR),
        "v2": (NOW - 5 * HOUR, None),
        "v3": (NOW - 1 * HOUR, None),
        "dev-a": (NOW - 30 * HOUR, NOW - 20 * HOUR),
        "dev-b": (NOW - 2 * HOUR, None),
        "old": (None, None),
    }

    def keepsOf(self, policies, repository="team/app"):
        decision = decide(retention(policies), repository, self.times, self.times, NOW)
        return sorted(decision.keep), decision.delete

    def test_noPolicyKeepsEverything(self):
        """
        A repository no policy matches keeps every tag.
        """
        kept, gone = self.keepsOf([{"repositories": ["other/**"], "keepTags": [
            {"mostRecentlyPushedCount": 1}]}])
        self.assertEqual(gone, [])
        self.assertEqual(kept, sorted(self.times))

    def test_policyWithoutKeepTagsKeepsEverything(self):
        """
        A matching policy without C{keepTags} removes no tag.
        """
        self.assertEqual(self.keepsOf([{"repositories": ["**"]}])[1], [])

    def test_firstMatchingPolicyWins(self):
        """
        Policies are tried in order and the first whose globs match
        applies; C{*} does not cross C{/}, C{**} does.
        """
        config = retention([
            {"repositories": ["team/*"], "keepTags": [{"patterns": ["^v"]}]},
            {"repositories": ["**"], "keepTags": [{"patterns": [".*"]}]},
        ])
        self.assertEqual(policyFor(config, "team/app")[0], 0)
        self.assertEqual(policyFor(config, "team/app/sub")[0], 1)
        self.assertEqual(policyFor(retention([{"repositories": ["team/*"]}]), "x"), (None, None))

    def test_patterns(self):
        """
        A rule with only C{patterns} keeps the tags any pattern matches
        (searched, not anchored); the rest go.
        """
        kept, gone = self.keepsOf([{"repositories": ["**"], "keepTags": [
            {"patterns": ["^v", "old"]}]}])
        self.assertEqual(kept, ["old", "v1", "v2", "v3"])
        self.assertEqual(gone, ["dev-a", "dev-b"])

    def test_badPatternKeepsEverything(self):
        """
        A pattern Python cannot compile removes nothing.
        """
        kept, gone = self.keepsOf([{"repositories": ["**"], "keepTags": [
            {"patterns": ["(?P<x"]}]}])
        self.assertEqual(gone, [])
        self.assertEqual(kept, sorted(self.times))

    def test_mostRecentlyPushedCount(self):
        """
        C{mostRecentlyPushedCount} keeps the N most recently pushed of the
        matching tags.
        """
        kept, gone = self.keepsOf([{"repositories": ["**"], "keepTags": [
            {"patterns": ["^v"], "mostRecentlyPushedCount": 2}]}])
        self.assertEqual(kept, ["v2", "v3"])
        self.assertEqual(gone, ["dev-a", "dev-b", "old", "v1"])

    def test_mostRecentlyPulledCount(self):
        """
        C{mostRecentlyPulledCount} counts only tags ever pulled.
        """
        kept, _ = self.keepsOf([{"repositories": ["**"], "keepTags": [
            {"mostRecentlyPulledCount": 5}]}])
        self.assertEqual(kept, ["dev-a", "v1"])

    def test_within(self):
        """
        C{pushedWithin} and C{pulledWithin} keep the tags pushed or pulled
        recently enough; the criteria of a rule combine with OR.
        """
        kept, _ = self.keepsOf([{"repositories": ["**"], "keepTags": [
            {"pushedWithin": "3h", "pulledWithin": "24h"}]}])
        self.assertEqual(kept, ["dev-a", "dev-b", "v1", "v3"])

    def test_rulesCombine(self):
        """
        A tag any rule keeps stays; the reason names the first rule.
        """
        decision = decide(retention([{"repositories": ["**"], "keepTags": [
            {"patterns": ["^dev"], "mostRecentlyPushedCount": 1},
            {"patterns": ["^v"], "pushedWithin": "6h"},
        ]}]), "r", self.times, self.times, NOW)
        self.assertEqual(sorted(decision.keep), ["dev-b", "v2", "v3"])
        self.assertEqual(decision.keep["dev-b"], "keepTags[0]: among the 1 most recently pushed")
        self.assertEqual(decision.keep["v3"], "keepTags[1]: pushed within 21600 s")
        self.assertEqual(decision.delete, ["dev-a", "old", "v1"])


class ApplyTests(StoreCase):
    """
    L{applyRetention} on a store.
    """

    def setUp(self):
        super().setUp()
        self.store.tagTimes._clock = lambda: NOW - 100 * HOUR
        for tag, when in [("v1", NOW - 10 * HOUR), ("v2", NOW - 5 * HOUR),
                          ("v3", NOW - HOUR)]:
            self.pushImage("team/app", tag, layers=(tag.encode(),), config=tag.encode())
            self.store.tagTimes.pushed("team/app", [tag], when=when)
        self.config = retention([{"repositories": ["team/**"], "keepTags": [
            {"mostRecentlyPushedCount": 1}]}], dryRun=True)

    def apply(self, dryRun=None):
        return self.successResultOf(ensureDeferred(
            applyRetention(self.store, self.config, NOW, dryRun=dryRun)
        ))

    def tags(self):
        return self.result(self.store.listTags("team/app"))

    def test_dryRunLogsOnly(self):
        """
        A dry run removes nothing and logs each tag that would go.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertEqual(self.apply(), {"team/app": ["v1", "v2"]})
        self.assertEqual(self.tags(), ["v1", "v2", "v3"])
        text = "\n".join(formatEvent(e) for e in observer)
        self.assertIn("retention (dry run): would remove tag team/app:v1 (policy 0)", text)
        self.assertIn("would remove tag team/app:v2", text)
        self.assertNotIn("team/app:v3", text)

    def test_removesTags(self):
        """
        Without a dry run the tags that go are removed, the others stay.
        """
        self.assertEqual(self.apply(dryRun=False), {"team/app": ["v1", "v2"]})
        self.assertEqual(self.tags(), ["v3"])

    def test_unrecordedPushUsesManifestTime(self):
        """
        A tag whose push was never recorded counts as pushed when its
        manifest file was written.
        """
        self.pushImage("team/app", "legacy", layers=(b"legacy",), config=b"legacy")
        times = self.store.tagTimes._times["team/app"]
        times["legacy"][0] = None
        digest = self.result(self.store.statManifest("team/app", "legacy"))[2]
        os.utime(self.store._blobPath("team/app", digest), (NOW - 0.5 * HOUR,) * 2)
        self.apply(dryRun=False)
        self.assertEqual(self.tags(), ["legacy"])
