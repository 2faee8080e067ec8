# -*- test-case-name: tests.test_auth_policy -*-
"""
zot's C{http.accessControl}: who may do what to which repositories.

This module is pure and synchronous: it knows nothing of HTTP, Deferreds or
the store, only of names, groups, actions and repository names, so that the
whole rule set can be tested as a table.  L{zotwist.auth.authorizer} maps
requests to actions and asks L{AccessPolicy}.

The rules, as zot's C{pkg/api/authz.go} applies them:

  - Each key of C{repositories} is a glob over repository names (L{globMatch}:
    C{*} stays within one path level, C{**} spans any number of them).  For a
    repository, only the B{longest} matching pattern counts; the others are
    not consulted at all, so C{"team/app": {...}} can take away what C{"**"}
    grants.
  - In that pattern's policy group, an action is allowed when a C{policies}
    entry lists it and names the user or one of the user's groups; or when
    C{defaultPolicy} lists it and the caller is authenticated; or when
    C{anonymousPolicy} lists it and the caller is anonymous.  (A listed user
    who lacks an action still gets it from C{defaultPolicy}: zot's policies
    only add.)
  - When that did not allow it, C{adminPolicy} is asked: a user it names, or
    a member of a group it names, may do its C{actions} on every repository,
    matched by a pattern or not.
  - A repository no pattern matches allows nothing, except to admins.
  - A caller's groups are those C{groups} lists the user in, together with
    the groups the authenticator found (LDAP).

zot breaks ties between matching patterns of equal length by Go's map order,
which is random; here the pattern with fewer wildcard characters wins, then
the one that sorts first, so that a decision never changes between requests.
"""

import re
from dataclasses import dataclass
from functools import lru_cache

#: The actions zot's policies grant.
READ = "read"
CREATE = "create"
UPDATE = "update"
DELETE = "delete"
ACTIONS = (READ, CREATE, UPDATE, DELETE)


class PatternError(ValueError):
    """
    A repository glob that cannot be compiled (an unclosed C{[} or C{{}).
    """


def _translateSegmentPart(text: str, pattern: str) -> str:
    """
    Translate glob syntax without C{/} and without C{**} segments into a
    regular expression: C{*}, C{?}, C{[class]}, C{{a,b}} and C{\\} escapes.
    """
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                raise PatternError(f"{pattern!r}: trailing backslash")
            out.append(re.escape(text[i + 1]))
            i += 2
            continue
        if c == "*":
            while i < len(text) and text[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if text[j : j + 1] in ("!", "^"):
                j += 1
            if text[j : j + 1] == "]":
                j += 1  # a "]" right after the opening is literal
            end = text.find("]", j)
            if end < 0:
                raise PatternError(f"{pattern!r}: unclosed character class")
            body = text[i + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            escaped = "".join("\\" + ch if ch in "\\[]^" else ch for ch in body)
            out.append(f"(?!/)[{'^' if negate else ''}{escaped}]")
            i = end + 1
            continue
        elif c == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(text):
                raise PatternError(f"{pattern!r}: unclosed {{alternatives}}")
            alternatives = _splitAlternatives(text[i + 1 : j])
            out.append(
                "(?:" + "|".join(_translate(a, pattern) for a in alternatives) + ")"
            )
            i = j + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _splitAlternatives(text: str) -> list[str]:
    """
    Split the inside of C{{...}} at its top-level commas.
    """
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _translate(pattern: str, whole: str) -> str:
    """
    Translate a glob (which may contain C{/} and C{**} segments) into a
    regular expression, following doublestar v4, the matcher zot uses.
    """
    segments = []
    for segment in pattern.split("/"):
        if segment == "**" and segments and segments[-1] == "**":
            continue  # "**/**" is "**"
        segments.append(segment)
    out = []
    for index, segment in enumerate(segments):
        first, last = index == 0, index == len(segments) - 1
        if segment == "**":
            if first and last:
                out.append(".*")  # every name
            elif first:
                out.append("(?:.*/)?")  # zero or more levels, then a "/"
            else:
                out.append("(?:/.*)?")  # "a/**" is "a" and all below it
            continue
        if not first and not (index == 1 and segments[0] == "**"):
            out.append("/")
        out.append(_translateSegmentPart(segment, whole))
    return "".join(out)


@lru_cache(maxsize=1024)
def compilePattern(pattern: str) -> "re.Pattern[str]":
    """
    Compile a repository glob.

    @raise PatternError: if the glob is malformed.
    """
    try:
        return re.compile(_translate(pattern, pattern), re.DOTALL)
    except re.error as e:
        raise PatternError(f"{pattern!r}: {e}") from None


def globMatch(pattern: str, name: str) -> bool:
    """
    Whether repository C{name} matches C{pattern}, with zot's (doublestar)
    semantics: C{*} and C{?} never match C{/}; a C{**} path segment matches
    zero or more whole levels (C{"a/**"} matches C{"a"} and C{"a/b/c"});
    C{[abc]}, C{[!abc]}, C{{x,y}} and backslash escapes work as in shells.
    """
    return compilePattern(pattern).fullmatch(name) is not None


def _specificity(pattern: str) -> tuple:
    """
    The sort key that picks the deciding pattern: longest first (zot's
    rule), then fewest wildcards, then alphabetical.
    """
    wildcards = sum(pattern.count(c) for c in "*?[{")
    return (-len(pattern), wildcards, pattern)


@dataclass(frozen=True)
class Caller:
    """
    What the policy needs to know about a caller.

    @ivar name: the user name, or L{None} when anonymous.
    @ivar groups: the groups the authenticator found (LDAP), before the
        config's C{groups} are added.
    """

    name: str | None
    groups: frozenset = frozenset()


class AccessPolicy:
    """
    The compiled C{http.accessControl} section.

    @param config: a L{zotwist.config.AccessControlConfig}.
    """

    def __init__(self, config):
        self._config = config
        self._repositories = dict(config.repositories)
        # Compile every glob once, now, so that a bad one fails at start-up.
        for pattern in self._repositories:
            compilePattern(pattern)
        self._ordered = sorted(self._repositories, key=_specificity)
        self._admin = config.adminPolicy
        self._groupsOfUser: dict[str, set[str]] = {}
        for groupName, group in config.groups.items():
            for user in group.users:
                self._groupsOfUser.setdefault(user, set()).add(groupName)

    # -- who is the caller ---------------------------------------------------

    def groupsOf(self, caller) -> frozenset:
        """
        The caller's groups: the authenticator's, and those C{groups} lists
        the user in.
        """
        groups = set(caller.groups or ())
        if caller.name is not None:
            groups |= self._groupsOfUser.get(caller.name, set())
        return frozenset(groups)

    def isAdmin(self, caller) -> bool:
        """
        Whether C{adminPolicy} names the caller or one of the caller's groups.
        """
        admin = self._admin
        if admin is None or caller.name is None:
            return False
        if caller.name in admin.users:
            return True
        return not self.groupsOf(caller).isdisjoint(admin.groups)

    # -- decisions -----------------------------------------------------------

    def decidingPattern(self, repository: str) -> str | None:
        """
        The pattern whose policy group decides for C{repository}, or L{None}
        when none matches.
        """
        for pattern in self._ordered:
            if globMatch(pattern, repository):
                return pattern
        return None

    def can(self, caller, action: str, repository: str) -> bool:
        """
        Whether C{caller} may do C{action} on C{repository}.

        @param caller: anything with C{name} (L{None} for anonymous) and
            C{groups}, such as an L{Identity} or a L{Caller}.
        """
        pattern = self.decidingPattern(repository)
        if pattern is not None and self._permitted(
            self._repositories[pattern], caller, action
        ):
            return True
        return self.isAdmin(caller) and action in self._admin.actions

    def _permitted(self, group, caller, action: str) -> bool:
        """
        zot's C{isPermitted}: user entries, group entries, then the default
        or anonymous policy.
        """
        name = caller.name
        if name is None:
            return action in group.anonymousPolicy
        groups = None
        for policy in group.policies:
            if action not in policy.actions:
                continue
            if name in policy.users:
                return True
            if policy.groups:
                if groups is None:
                    groups = self.groupsOf(caller)
                if not groups.isdisjoint(policy.groups):
                    return True
        return action in group.defaultPolicy

    # -- facts about the configuration ----------------------------------------

    def anonymousPolicyExists(self) -> bool:
        """
        Whether any repository grants anything to anonymous callers.
        """
        return any(group.anonymousPolicy for group in self._repositories.values())

    def containsOnlyAnonymousPolicy(self) -> bool:
        """
        zot's rule for configs without authentication: there is at least
        one anonymous policy, and no default, user, group or admin policy.
        """
        return containsOnlyAnonymousPolicy(self._config)

    def hasMixedPolicies(self) -> bool:
        """
        Anonymous policies next to policies only authenticated users get:
        the case where Docker must be made to log in on C{GET /v2/}.
        """
        return self.anonymousPolicyExists() and not self.containsOnlyAnonymousPolicy()

    def mayReadMetrics(self, caller) -> bool:
        """
        C{accessControl.metrics}: the users it lists may read the metrics
        endpoint, and anonymous callers when its C{anonymousPolicy} has
        C{read}.  (For the metrics endpoint, when there is one.)
        """
        metrics = self._config.metrics
        if metrics is None:
            return caller.name is not None
        if caller.name is None:
            return READ in metrics.anonymousPolicy
        return caller.name in metrics.users


def containsOnlyAnonymousPolicy(config) -> bool:
    """
    Whether an L{zotwist.config.AccessControlConfig} grants something to
    anonymous callers and nothing to anyone else (zot's
    C{ContainsOnlyAnonymousPolicy}); such a config is the only one that
    makes sense without any authentication.
    """
    admin = config.adminPolicy
    if admin is not None and (admin.actions or admin.users or admin.groups):
        return False
    anonymous = False
    for group in config.repositories.values():
        if group.defaultPolicy:
            return False
        if group.anonymousPolicy:
            anonymous = True
        for policy in group.policies:
            if policy.actions or policy.users or policy.groups:
                return False
    return anonymous


__all__ = [
    "ACTIONS",
    "AccessPolicy",
    "CREATE",
    "Caller",
    "DELETE",
    "PatternError",
    "READ",
    "UPDATE",
    "compilePattern",
    "containsOnlyAnonymousPolicy",
    "globMatch",
]
