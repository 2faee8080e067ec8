# -*- test-case-name: tests.test_config -*-
"""
zot's JSON configuration file, read into frozen, validated objects.

zotwist reads zot's own C{config.json}, key for key and with zot's spelling,
so that an existing zot deployment can switch without rewriting its
configuration.  Three promises follow from that:

  - A config that zot accepts loads here.  Keys are matched without regard to
    case, as zot's loader (viper) does, and a key zot knows but zotwist does
    not implement yet loads with a warning in L{Config.warnings}.
  - A mistake stops loading with one line naming the file, the key path and
    what was expected (L{ConfigError}); zot rejects unknown keys, and so do
    we.  Nobody should have to read a traceback to fix a typo.
  - A key that grants or restricts access (C{http.tls}, C{http.auth},
    C{http.accessControl}) is never ignored: while it is not implemented,
    loading fails, because serving without it would fail open.

The schema is declarative.  Every section is a frozen dataclass whose field
names are zot's keys and whose field defaults are zot's defaults; each
field's metadata, made by L{_zot}, records the key's kind and status
(L{IMPLEMENTED}, L{NOT_IMPLEMENTED}, L{REFUSED} or L{ACCEPTED}).  A key
without a status of its own inherits its section's.  The loader
(L{_Section}) only walks these declarations, so adding a key, or
implementing one, is an edit to a field, not to the loader: flip the status
of C{HTTPConfig.tls} to L{IMPLEMENTED} and TLS settings load into
L{TLSConfig} with no other change here.
"""

import copy
import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import combinations
from typing import Any

from zotwist import DIST_SPEC_VERSION
from zotwist.auth.policy import PatternError, compilePattern, containsOnlyAnonymousPolicy

#: The key works in zotwist.
IMPLEMENTED = "implemented"
#: zot knows the key and zotwist does not implement it yet: it loads, is
#: type-checked, and adds a warning.
NOT_IMPLEMENTED = "not implemented"
#: zot knows the key, zotwist does not implement it yet, and serving without
#: it would grant access the operator meant to restrict: loading fails.
REFUSED = "refused"
#: The key is parsed and exposed but deliberately has no effect, so it does
#: not warn either; the field's docstring says why.
ACCEPTED = "accepted"

_META = "zotwist.config"
_NANOSECONDS_MAX = 2**63 - 1


class ConfigError(Exception):
    """
    A configuration file zotwist will not run with.

    C{str(error)} is always one line, C{"<file>: <key.path>: <what is
    wrong>"}, suitable for printing as it is (the key path is left out when
    the problem is the file as a whole).

    @ivar source: the file name, or C{"<config>"} for a document that did not
        come from a file.
    @ivar keyPath: the dotted path of the offending key, such as
        C{storage.subPaths["/a"].gcDelay}, or L{None}.
    @ivar message: what was expected or what is wrong.
    """

    def __init__(self, source: str, keyPath: str | None, message: str) -> None:
        """
        Record the parts of the message separately, for callers that want them.
        """
        self.source = source
        self.keyPath = keyPath
        self.message = message
        super().__init__(source, keyPath, message)

    def __str__(self) -> str:
        """
        Join the parts into one line; control characters become spaces.
        """
        parts = [self.source, self.keyPath, self.message]
        text = ": ".join(part for part in parts if part)
        return re.sub(r"[\r\n\t]+", " ", text)


class _Invalid(Exception):
    """
    A problem found while walking a document; L{parseConfig} adds the file
    name and turns it into a L{ConfigError}.
    """

    def __init__(self, keyPath: str, message: str) -> None:
        """
        Remember where the problem is and what it is.
        """
        super().__init__(keyPath, message)
        self.keyPath = keyPath
        self.message = message


# -- describing values and paths in messages ---------------------------------


def _describe(value: Any) -> str:
    """
    Say what a JSON value is, in JSON's terms, for "expected X, got Y".
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        if len(shown) > 40:
            shown = shown[:37] + '..."'
        return f"a string ({shown})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _child(path: str, name: str) -> str:
    """
    The path of key C{name} inside C{path}; names that would not read well
    after a dot (C{"/ci"}, C{"**"}) are quoted in brackets instead.
    """
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return f"{path}.{name}" if path else name
    return f"{path}[{json.dumps(name)}]"


# -- kinds: what a key's value must look like ---------------------------------


class _Kind:
    """
    The shape of a value.  L{convert} checks a JSON value and returns the
    Python value stored in the config object.

    @cvar label: how "expected ..." names this kind in messages.
    """

    label = "a value"

    def convert(self, value: Any, path: str, status: str, walk: "_Walk") -> Any:
        """
        @param value: the JSON value (never L{None}: null means "not given").
        @param path: the key path of C{value}, for messages.
        @param status: the effective status of this key, handed down to
            nested sections.
        @param walk: collects warnings for the whole document.
        @raise _Invalid: if C{value} does not fit.
        """
        raise NotImplementedError

    def wrongType(self, value: Any, path: str) -> _Invalid:
        """
        @return: the error for a value of the wrong JSON type.
        """
        return _Invalid(path, f"expected {self.label}, got {_describe(value)}")


class _String(_Kind):
    """
    A JSON string.

    @ivar emptyIsNone: store C{""} as L{None}, for keys where zot treats an
        empty string as "not set" (C{log.output}).
    @ivar nonEmpty: refuse C{""}.
    """

    def __init__(self, emptyIsNone: bool = False, nonEmpty: bool = False) -> None:
        """
        Choose how empty strings are treated.
        """
        self.emptyIsNone = emptyIsNone
        self.nonEmpty = nonEmpty
        self.label = "a non-empty string" if nonEmpty else "a string"

    def convert(self, value, path, status, walk):
        """
        Accept a string, applying L{emptyIsNone} and L{nonEmpty}.
        """
        if not isinstance(value, str):
            raise self.wrongType(value, path)
        if value == "" and self.nonEmpty:
            raise _Invalid(path, "expected a non-empty string")
        if value == "" and self.emptyIsNone:
            return None
        return value


class _Directory(_String):
    """
    A directory path, made absolute against the current directory, as zot
    resolves it: the rest of zotwist can then compare and join paths without
    caring where the process was started.
    """

    def __init__(self) -> None:
        """
        A directory path is a non-empty string.
        """
        super().__init__(nonEmpty=True)
        self.label = "a directory path"

    def convert(self, value, path, status, walk):
        """
        Accept a non-empty string and make it absolute.
        """
        return os.path.abspath(super().convert(value, path, status, walk))


class _Bool(_Kind):
    """
    JSON C{true} or C{false}; strings such as C{"true"} are refused so that a
    quoted C{"false"} cannot silently mean true.
    """

    label = "true or false"

    def convert(self, value, path, status, walk):
        """
        Accept JSON C{true} or C{false} only.
        """
        if not isinstance(value, bool):
            raise self.wrongType(value, path)
        return value


class _Int(_Kind):
    """
    A whole number (C{5} or C{5.0}; booleans are not numbers here).

    @ivar minimum: the smallest allowed value, or L{None}.
    """

    def __init__(self, minimum: int | None = None) -> None:
        """
        Choose the smallest allowed value.
        """
        self.minimum = minimum
        self.label = "a whole number"
        if minimum is not None:
            self.label = f"a whole number >= {minimum}"

    def convert(self, value, path, status, walk):
        """
        Accept a whole number, not below L{minimum}.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.wrongType(value, path)
        if isinstance(value, float):
            if not value.is_integer():
                raise self.wrongType(value, path)
            value = int(value)
        if self.minimum is not None and value < self.minimum:
            raise self.wrongType(value, path)
        return value


class _Port(_Kind):
    """
    A TCP port.  zot writes it as a string (C{"8080"}) and parses it with
    Go's C{strconv.ParseInt}; a JSON number is accepted too.  C{0} asks for
    an ephemeral port, which the tests use.
    """

    label = 'a port number from 0 to 65535 (a string such as "8080", or a number)'

    def convert(self, value, path, status, walk):
        """
        Accept a port as a decimal string or a number.
        """
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise self.wrongType(value, path)
        if not 0 <= number <= 65535:
            raise self.wrongType(value, path)
        return number


class _Duration(_Kind):
    """
    A Go duration string, stored as seconds (see L{parseDuration}).

    @ivar positive: refuse zero and negative durations, for intervals and
        delays where zot's C{verify} does.
    """

    def __init__(self, positive: bool = False) -> None:
        """
        Choose whether zero and negative durations are allowed.
        """
        self.positive = positive
        self.label = 'a Go duration such as "1h30m"'

    def convert(self, value, path, status, walk):
        """
        Accept a Go duration string; return seconds.
        """
        try:
            seconds = parseDuration(value)
        except (TypeError, ValueError) as e:
            raise _Invalid(path, str(e)) from None
        if self.positive and seconds <= 0:
            raise _Invalid(
                path, f"expected a duration greater than zero, got {value!r}"
            )
        return seconds


class _Choice(_Kind):
    """
    One string out of a fixed set.

    @ivar values: the allowed values, in the spelling that is stored.
    @ivar foldCase: match without regard to case (zot's log levels) and store
        the value as spelt in C{values}.
    """

    def __init__(self, *values: str, foldCase: bool = False) -> None:
        """
        Fix the allowed values.
        """
        self.values = values
        self.foldCase = foldCase
        self.label = "one of " + ", ".join(json.dumps(v) for v in values)

    def convert(self, value, path, status, walk):
        """
        Accept one of L{values}; return it as spelt there.
        """
        if isinstance(value, str):
            for allowed in self.values:
                if value == allowed or (
                    self.foldCase and value.lower() == allowed.lower()
                ):
                    return allowed
        raise self.wrongType(value, path)


class _GCTimeWindow(_Kind):
    """
    zot's C{gcTimeWindow}: C{"HH:MM-HH:MM"} in UTC, which may wrap past
    midnight; start and end must differ, and C{""} means no restriction.
    Stored normalised (C{"1:00-8:00"} becomes C{"01:00-08:00"}) or L{None}.
    """

    label = 'a time window such as "01:00-08:00"'

    def convert(self, value, path, status, walk):
        """
        Accept C{"HH:MM-HH:MM"} or C{""}; return it normalised.
        """
        if not isinstance(value, str):
            raise self.wrongType(value, path)
        if value == "":
            return None
        match = re.fullmatch(
            r"\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*", value
        )
        if match is None:
            raise self.wrongType(value, path)
        startH, startM, endH, endM = (int(g) for g in match.groups())
        if startH > 23 or endH > 23 or startM > 59 or endM > 59:
            raise self.wrongType(value, path)
        if (startH, startM) == (endH, endM):
            raise _Invalid(path, "start and end of the window cannot be equal")
        return f"{startH:02d}:{startM:02d}-{endH:02d}:{endM:02d}"


class _ListOf(_Kind):
    """
    A JSON array whose items are all of one kind; stored as a tuple.
    """

    def __init__(self, item: _Kind, label: str = "an array") -> None:
        """
        Fix the kind of the items and the label used in messages.
        """
        self.item = item
        self.label = label

    def convert(self, value, path, status, walk):
        """
        Accept an array; convert each item and return a tuple.
        """
        if not isinstance(value, list):
            raise self.wrongType(value, path)
        converted = []
        for index, item in enumerate(value):
            itemPath = f"{path}[{index}]"
            if item is None:
                raise _Invalid(itemPath, f"expected {self.item.label}, got null")
            converted.append(self.item.convert(item, itemPath, status, walk))
        return tuple(converted)


class _MapOf(_Kind):
    """
    A JSON object with free keys (repository globs, sub-path prefixes, group
    names) whose values are all of one kind; stored as a dict.
    """

    def __init__(self, value: _Kind) -> None:
        """
        Fix the kind of the values.
        """
        self.value = value
        self.label = "an object"

    def convert(self, value, path, status, walk):
        """
        Accept an object; convert each value and return a dict.
        """
        if not isinstance(value, dict):
            raise self.wrongType(value, path)
        converted = {}
        for name, item in value.items():
            itemPath = _child(path, name)
            if item is None:
                raise _Invalid(itemPath, f"expected {self.value.label}, got null")
            converted[name] = self.value.convert(item, itemPath, status, walk)
        return converted


class _FreeForm(_Kind):
    """
    A JSON object whose keys are not zot's to fix: storage and cache driver
    parameters (each driver has its own), or subtrees zotwist keeps whole for
    now (C{extensions.sync}, C{http.auth.openid}).  Stored as a deep copy.

    @ivar check: called as C{check(value, path, status, walk)} to validate
        what is known about the object (raising L{_Invalid}) and to add
        warnings for parameters zotwist ignores.
    """

    label = "an object"

    def __init__(self, check=None) -> None:
        """
        Choose the check to run on the object, if any.
        """
        self.check = check

    def convert(self, value, path, status, walk):
        """
        Accept an object, run L{check}, and return a copy.
        """
        if not isinstance(value, dict):
            raise self.wrongType(value, path)
        if self.check is not None:
            self.check(value, path, status, walk)
        return copy.deepcopy(value)


_STRING = _String()
_OPTIONAL_STRING = _String(emptyIsNone=True)
_BOOL = _Bool()
_INT = _Int()
_COUNT = _Int(minimum=0)
_DURATION = _Duration()
_POSITIVE_DURATION = _Duration(positive=True)
_STRINGS = _ListOf(_STRING, "an array of strings")
_FREE_FORM = _FreeForm()


# -- sections: how a key is declared and how an object is walked --------------


@dataclass(frozen=True)
class _Setting:
    """
    What the schema says about one key; kept in the dataclass field's
    metadata by L{_zot}.

    @ivar kind: the value's shape.
    @ivar status: L{IMPLEMENTED}, L{NOT_IMPLEMENTED}, L{REFUSED},
        L{ACCEPTED}, or L{None} to inherit the enclosing section's status.
    @ivar required: loading fails when the key is missing (or null).
    @ivar refusal: for a refused key, what the registry would be without
        ("TLS"), used in the message.
    """

    kind: _Kind
    status: str | None
    required: bool
    refusal: str | None


def _zot(
    kind: _Kind,
    *,
    status: str | None = None,
    required: bool = False,
    refusal: str | None = None,
) -> "dict[str, _Setting]":
    """
    Declare a dataclass field to be a zot key of the same name: used as
    C{field(default=..., metadata=_zot(kind, status=...))}, so that a
    section's fields read as the table of its keys.

    @param kind: the value's shape (a L{_Kind}).
    @param status: see L{_Setting.status}.
    @param required: see L{_Setting.required}.
    @param refusal: see L{_Setting.refusal}.
    @return: the field's metadata.
    """
    return {_META: _Setting(kind, status, required, refusal)}


def _settings(cls: type) -> "dict[str, _Setting]":
    """
    The declared zot keys of a section dataclass, in declaration order.
    """
    return {
        f.name: f.metadata[_META]
        for f in dataclasses.fields(cls)
        if _META in f.metadata
    }


class _Walk:
    """
    State shared by one walk over a document.

    @ivar warnings: one line per key that zot knows and zotwist ignores.
    """

    def __init__(self) -> None:
        """
        Start with no warnings.
        """
        self.warnings: list[str] = []


class _Section(_Kind):
    """
    A JSON object with zot's fixed keys, declared by a dataclass whose
    fields carry L{_zot} metadata; this is the whole loader.

    For each key: resolve its spelling (case-insensitive, as zot's viper
    does), refuse it if its status is L{REFUSED}, warn once if it is
    L{NOT_IMPLEMENTED} (once for the outermost such key, not for each key
    inside it), convert it, and construct the dataclass.  A dataclass may
    define C{_validate(self, path)} for checks that involve several keys,
    and C{_warnings(self, path)} returning warning lines about how keys
    combine (asked only where the section itself is implemented).
    """

    label = "an object"

    def __init__(self, cls: type) -> None:
        """
        Fix the dataclass that declares the section's keys.
        """
        self.cls = cls

    def convert(self, value, path, status, walk):
        """
        Walk an object against the declared keys; return the dataclass.
        """
        if not isinstance(value, dict):
            raise self.wrongType(value, path)
        settings = _settings(self.cls)
        folded = {name.lower(): name for name in settings}
        given: dict[str, tuple[str, Any]] = {}
        for spelling, item in value.items():
            name = spelling if spelling in settings else folded.get(spelling.lower())
            if name is None:
                raise _Invalid(_child(path, spelling), _unknownKey(spelling, settings))
            if name in given:
                raise _Invalid(
                    _child(path, name),
                    f"given twice, as {json.dumps(given[name][0])} and "
                    f"{json.dumps(spelling)} (zot does not tell key case apart)",
                )
            given[name] = (spelling, item)

        values = {}
        for name, setting in settings.items():
            keyPath = _child(path, name)
            keyStatus = setting.status or status
            item = given.get(name, (name, None))[1]
            if item is None:
                if not setting.required:
                    continue
                if name in given and not isinstance(setting.kind, _Section):
                    raise _Invalid(keyPath, f"expected {setting.kind.label}, got null")
                if not isinstance(setting.kind, _Section):
                    raise _Invalid(keyPath, "required, but missing")
                # A required section reports the first required key inside it.
                item = {}
            if keyStatus == REFUSED:
                raise _Invalid(
                    keyPath,
                    "not implemented by zotwist yet, and zotwist refuses to start "
                    f"rather than serve without {setting.refusal or 'it'}",
                )
            if keyStatus == NOT_IMPLEMENTED and status != NOT_IMPLEMENTED:
                walk.warnings.append(
                    f"{keyPath}: not implemented by zotwist yet; ignored"
                )
            values[name] = setting.kind.convert(item, keyPath, keyStatus, walk)

        section = self.cls(**values)
        validate = getattr(section, "_validate", None)
        if validate is not None:
            validate(path)
        warnings = getattr(section, "_warnings", None)
        if warnings is not None and status == IMPLEMENTED:
            walk.warnings.extend(warnings(path))
        return section


def _unknownKey(spelling: str, settings: "dict[str, _Setting]") -> str:
    """
    The message for a key the schema does not have, with a suggestion when
    one known key is close.
    """
    folded = {name.lower(): name for name in settings}
    close = difflib.get_close_matches(spelling.lower(), folded, n=1, cutoff=0.6)
    if close:
        hint = f'did you mean "{folded[close[0]]}"?'
    else:
        hint = "known keys here: " + ", ".join(settings)
    return f"unknown key ({hint}); zot rejects unknown keys"


# -- Go durations ---------------------------------------------------------------

_UNIT_NANOSECONDS = {
    "ns": Decimal(1),
    "us": Decimal(10**3),
    "\u00b5s": Decimal(10**3),
    "\u03bcs": Decimal(10**3),
    "ms": Decimal(10**6),
    "s": Decimal(10**9),
    "m": Decimal(60 * 10**9),
    "h": Decimal(3600 * 10**9),
}
_DURATION_PART = re.compile(
    "([0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
)


def parseDuration(value: Any) -> float:
    """
    Parse a Go duration string, as zot's config takes for C{gcDelay},
    C{gcInterval}, C{readTimeout} and the like, into seconds.

    The grammar is Go's C{time.ParseDuration}: an optional sign, then one or
    more decimal numbers each with a unit (C{ns}, C{us}, C{ms}, C{s}, C{m},
    C{h}), such as C{"1h30m"} or C{"1.5s"}; a bare C{"0"} is zero.  Numbers
    are refused even though zot would read C{3600} as 3600 I{nanoseconds}:
    that is never what the person who wrote it meant.

    @param value: the value from the config document.
    @return: the duration in seconds (negative if the string says so).
    @raise TypeError: if C{value} is not a string.
    @raise ValueError: if the string is not a Go duration; the message names
        the expected format.
    """
    if not isinstance(value, str):
        raise TypeError(
            f'expected a Go duration string such as "1h30m", got {_describe(value)}'
        )
    invalid = ValueError(
        f"invalid duration {json.dumps(value, ensure_ascii=False)}: expected numbers "
        'with units (ns, us, ms, s, m, h), such as "30m", "1h30m" or "500ms"'
    )
    text = value
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise invalid
    nanoseconds = Decimal(0)
    position = 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise invalid
        nanoseconds += Decimal(match.group(1)) * _UNIT_NANOSECONDS[match.group(2)]
        position = match.end()
    if nanoseconds > _NANOSECONDS_MAX:
        raise ValueError(f"duration {json.dumps(value)} is too long (over 292 years)")
    return sign * float(nanoseconds / Decimal(10**9))


# -- storage ------------------------------------------------------------------

_STORAGE_DRIVERS = ("local", "s3", "gcs", "azure")
_REMOTE_STORAGE_DRIVERS = ("s3", "gcs", "azure")
#: The storage drivers zotwist implements.
_IMPLEMENTED_STORAGE_DRIVERS = ("local", "s3")
_CACHE_DRIVERS = ("boltdb", "dynamodb", "redis")

#: Parameters of the storage drivers whose type is known.  Booleans may be
#: strings as well, because the distribution drivers zot uses parse them
#: with Go's C{strconv.ParseBool} either way.
_DRIVER_PARAMETERS = {
    "rootdirectory": (str,),
    "region": (str,),
    "regionendpoint": (str,),
    "bucket": (str,),
    "accesskey": (str,),
    "secretkey": (str,),
    "forcepathstyle": (bool, str),
    "secure": (bool, str),
    "skipverify": (bool, str),
}

#: The parameters of zot's s3 driver (distribution's s3-aws) that zotwist
#: does not act on: they load with a warning.  Parameters neither here nor
#: in L{_DRIVER_PARAMETERS} warn too (zot's driver ignores what it does not
#: know), with a hint that they may be misspelt.
_S3_PARAMETERS_IGNORED = (
    "chunksize",
    "multipartcopychunksize",
    "multipartcopymaxconcurrency",
    "multipartcopythresholdsize",
    "storageclass",
    "encrypt",
    "keyid",
    "v4auth",
    "usedualstack",
    "accelerate",
    "objectacl",
    "sessiontoken",
    "useragent",
    "loglevel",
    "maxrequestspersecond",
    "maxretries",
)

#: What Go's C{strconv.ParseBool} reads as true and as false.
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")

#: URL schemes of a Redis server redis-py connects to.
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _lookupFolded(document: dict, name: str) -> tuple[str | None, Any]:
    """
    Find C{name} in a free-form object without regard to case.

    @return: the key as spelt in C{document} and its value, or
        C{(None, None)}.
    """
    for key, value in document.items():
        if key.lower() == name.lower():
            return key, value
    return None, None


def _goBool(value: Any) -> bool:
    """
    A driver parameter's boolean (C{true} or one of Go's spellings, such as
    C{"true"} or C{"0"}); L{_checkStorageDriver} made sure it is one.
    """
    if isinstance(value, bool):
        return value
    return value in _GO_TRUE


def _driverName(document: dict, path: str, names: "tuple[str, ...]") -> str:
    """
    Check the C{name} of a storage or cache driver object.
    """
    key, name = _lookupFolded(document, "name")
    namePath = _child(path, key or "name")
    choices = ", ".join(json.dumps(n) for n in names)
    if name is None:
        raise _Invalid(namePath, f"required, but missing (one of {choices})")
    if name not in names:
        raise _Invalid(namePath, f"expected one of {choices}, got {_describe(name)}")
    return name


def _checkStorageDriver(document: dict, path: str, status: str, walk: "_Walk") -> None:
    """
    Validate a C{storageDriver} object: a supported C{name} and the types of
    the common parameters.  Where the key is implemented (the default
    store), a driver zotwist has not implemented is refused, since serving
    from the local disk instead would split the data, and the s3 driver
    needs its C{bucket} and C{region} (as zot's does) and warns about the
    parameters zotwist ignores.
    """
    name = _driverName(document, path, _STORAGE_DRIVERS)
    for parameter, types in _DRIVER_PARAMETERS.items():
        key, value = _lookupFolded(document, parameter)
        if key is None or value is None:
            continue
        if not isinstance(value, types) or (
            isinstance(value, str) and bool in types and value not in _GO_TRUE + _GO_FALSE
        ):
            expected = "a string" if types == (str,) else "true or false"
            raise _Invalid(
                _child(path, key), f"expected {expected}, got {_describe(value)}"
            )
    if status != IMPLEMENTED:
        return
    if name not in _IMPLEMENTED_STORAGE_DRIVERS:
        raise _Invalid(
            _child(path, "name"),
            f"the {name} driver is not implemented by zotwist yet (only "
            '"local" and "s3"), and serving from the local disk instead would '
            "put the data somewhere else",
        )
    if name != "s3":
        return
    for parameter in ("bucket", "region"):
        key, value = _lookupFolded(document, parameter)
        if not value:
            raise _Invalid(
                _child(path, key or parameter), "required by the s3 driver, but missing"
            )
    for key in document:
        folded = key.lower()
        if folded == "name" or folded in _DRIVER_PARAMETERS:
            continue
        if folded in _S3_PARAMETERS_IGNORED:
            walk.warnings.append(f"{_child(path, key)}: not implemented by zotwist yet; ignored")
        else:
            walk.warnings.append(
                f"{_child(path, key)}: not a parameter of zot's s3 driver (misspelt?); ignored"
            )


def _checkCacheDriver(document: dict, path: str, status: str, walk: "_Walk") -> None:
    """
    Validate a C{cacheDriver} object: a known C{name}; where the key is
    implemented, a redis driver needs a C{redis://} (C{rediss://},
    C{unix://}) C{url}, and its other parameters (zot's go-redis options)
    warn, because zotwist only connects to that URL.
    """
    name = _driverName(document, path, _CACHE_DRIVERS)
    if status != IMPLEMENTED or name != "redis":
        return
    key, url = _lookupFolded(document, "url")
    urlPath = _child(path, key or "url")
    if url is None:
        raise _Invalid(
            urlPath,
            'required by zotwist\'s redis cacheDriver (such as "redis://127.0.0.1:6379/0"); '
            "address lists, sentinels and clusters are not implemented yet",
        )
    if not isinstance(url, str) or not url.startswith(_REDIS_SCHEMES):
        raise _Invalid(
            urlPath,
            'expected a Redis URL such as "redis://127.0.0.1:6379/0", got ' + _describe(url),
        )
    for other in document:
        if other.lower() not in ("name", "url"):
            walk.warnings.append(
                f"{_child(path, other)}: not implemented by zotwist yet; ignored"
            )


_STORAGE_DRIVER = _FreeForm(_checkStorageDriver)
_CACHE_DRIVER = _FreeForm(_checkCacheDriver)


@dataclass(frozen=True)
class S3DriverConfig:
    """
    The parameters of an s3 C{storage.storageDriver} that zotwist acts on,
    read from the driver object (whose keys are matched without regard to
    case) with the defaults of zot's s3 driver.

    @ivar rootdirectory: the key prefix the layout lives under (C{""}: the
        bucket's top); keys are C{<rootdirectory without its slashes>/<repo>/...}.
    @ivar regionendpoint: the S3 endpoint URL, or L{None} for AWS.
    @ivar secure: use HTTPS when C{regionendpoint} names no scheme.
    @ivar skipverify: do not verify the endpoint's TLS certificate.
    @ivar accesskey: the access key, or L{None} for the SDK's usual sources
        (environment, instance role).
    @ivar forcepathstyle: address buckets as C{<endpoint>/<bucket>} rather
        than C{<bucket>.<endpoint>}.
    """

    bucket: str
    region: str
    rootdirectory: str = ""
    regionendpoint: str | None = None
    secure: bool = True
    skipverify: bool = False
    accesskey: str | None = None
    secretkey: str | None = None
    forcepathstyle: bool = False

    @classmethod
    def fromDriver(cls, document: dict) -> "S3DriverConfig":
        """
        Read the parameters of a driver object L{_checkStorageDriver}
        accepted.
        """
        values: dict[str, Any] = {}
        for field_ in dataclasses.fields(cls):
            value = _lookupFolded(document, field_.name)[1]
            if value is None or (
                value == "" and field_.name in ("regionendpoint", "accesskey", "secretkey")
            ):
                continue
            values[field_.name] = _goBool(value) if field_.type is bool else value
        return cls(**values)


@dataclass(frozen=True)
class RedisCacheConfig:
    """
    A redis C{storage.cacheDriver}: where the instances of a cluster share
    their state.

    @ivar url: the server's URL, C{redis://[[user]:password@]host:port/db}
        (or C{rediss://}, C{unix://}).
    """

    url: str

    @classmethod
    def fromDriver(cls, document: dict) -> "RedisCacheConfig":
        """
        Read the C{url} of a driver object L{_checkCacheDriver} accepted.
        """
        return cls(url=_lookupFolded(document, "url")[1])


@dataclass(frozen=True)
class KeepUntaggedPolicy:
    """
    C{retention.policies[].keepUntagged}: which untagged manifests survive.
    """

    pulledWithin: float | None = field(default=None, metadata=_zot(_POSITIVE_DURATION))
    pushedWithin: float | None = field(default=None, metadata=_zot(_POSITIVE_DURATION))
    mostRecentlyPushedCount: int = field(default=0, metadata=_zot(_COUNT))
    mostRecentlyPulledCount: int = field(default=0, metadata=_zot(_COUNT))


@dataclass(frozen=True)
class KeepTagsPolicy(KeepUntaggedPolicy):
    """
    C{retention.policies[].keepTags[]}: tags matching C{patterns} (regular
    expressions) that any of the rules keeps.

    The patterns are not compiled here: zot compiles them with Go's RE2,
    whose syntax differs from Python's in corners, and refusing a pattern
    zot accepts would break a zot config.  Whoever implements retention
    compiles them with the engine they use.
    """

    patterns: tuple[str, ...] = field(default=(), metadata=_zot(_STRINGS))


@dataclass(frozen=True)
class RetentionPolicy:
    """
    One of C{retention.policies}; the first policy whose C{repositories}
    globs match a repository applies to it.
    """

    repositories: tuple[str, ...] = field(default=(), metadata=_zot(_STRINGS))
    deleteReferrers: bool = field(default=False, metadata=_zot(_BOOL))
    deleteUntagged: bool = field(default=True, metadata=_zot(_BOOL))
    keepTags: tuple[KeepTagsPolicy, ...] = field(
        default=(), metadata=_zot(_ListOf(_Section(KeepTagsPolicy)))
    )
    keepUntagged: KeepUntaggedPolicy | None = field(
        default=None, metadata=_zot(_Section(KeepUntaggedPolicy), status=NOT_IMPLEMENTED)
    )


@dataclass(frozen=True)
class RetentionConfig:
    """
    C{storage.retention}: what garbage collection may delete beyond
    unreferenced blobs (applied by L{zotwist.storage.retention}).

    @ivar delay: untagged manifests and referrers whose subject is gone are
        removed once this old; L{None} (not given) means the store's
        C{gcDelay}, as in zot.
    """

    dryRun: bool = field(default=False, metadata=_zot(_BOOL))
    delay: float | None = field(default=None, metadata=_zot(_POSITIVE_DURATION))
    policies: tuple[RetentionPolicy, ...] = field(
        default=(), metadata=_zot(_ListOf(_Section(RetentionPolicy)))
    )


def _checkStore(store: Any, path: str) -> None:
    """
    The checks zot's C{verify} makes on one store, the default one or a
    sub-path: GC timings when GC is on, and drivers that fit together.
    """
    for name in ("gcDelay", "gcInterval"):
        seconds = getattr(store, name)
        if seconds < 0:
            raise _Invalid(_child(path, name), "expected a duration of zero or more")
        if store.gc and seconds == 0:
            raise _Invalid(
                _child(path, name),
                "expected a duration greater than zero while gc is enabled",
            )
    driver = _lookupFolded(store.storageDriver or {}, "name")[1] or "local"
    if store.redirectBlobURL and driver not in _REMOTE_STORAGE_DRIVERS:
        raise _Invalid(
            _child(path, "redirectBlobURL"),
            "only possible with an s3, gcs or azure storageDriver",
        )
    if store.remoteCache and driver not in _REMOTE_STORAGE_DRIVERS:
        raise _Invalid(
            _child(path, "remoteCache"),
            "local storage cannot use a remote cache; it needs an s3, gcs or "
            "azure storageDriver",
        )


@dataclass(frozen=True)
class SubPathConfig:
    """
    One entry of C{storage.subPaths}: repositories under a prefix kept in a
    store of their own.

    Served by L{zotwist.storage.routed.RoutedStore}: each entry is a
    local store of its own (C{rootDirectory}, C{dedupe}, C{commit}) with its
    own garbage collection and retention (C{gc}, C{gcDelay}, C{gcInterval},
    C{gcTimeWindow}, C{retention}); the keys still without effect have a
    status of their own.  The defaults are zot's for a sub-path, which
    differ from the main store's: C{dedupe} and C{gc} are off unless given.

    @ivar rootDirectory: made absolute; it must not equal or nest in another
        store's root (checked by L{StorageConfig}).
    """

    rootDirectory: str = field(default=None, metadata=_zot(_Directory(), required=True))
    dedupe: bool = field(default=False, metadata=_zot(_BOOL))
    remoteCache: bool = field(default=False, metadata=_zot(_BOOL, status=NOT_IMPLEMENTED))
    gc: bool = field(default=False, metadata=_zot(_BOOL))
    gcDelay: float = field(default=3600.0, metadata=_zot(_DURATION))
    gcInterval: float = field(default=3600.0, metadata=_zot(_DURATION))
    gcTimeWindow: str | None = field(default=None, metadata=_zot(_GCTimeWindow()))
    commit: bool = field(default=False, metadata=_zot(_BOOL))
    maxRepos: int = field(default=0, metadata=_zot(_COUNT, status=NOT_IMPLEMENTED))
    redirectBlobURL: bool = field(
        default=False, metadata=_zot(_BOOL, status=NOT_IMPLEMENTED)
    )
    retention: RetentionConfig | None = field(
        default=None, metadata=_zot(_Section(RetentionConfig))
    )
    storageDriver: dict | None = field(
        default=None, metadata=_zot(_STORAGE_DRIVER, status=NOT_IMPLEMENTED)
    )
    cacheDriver: dict | None = field(
        default=None, metadata=_zot(_CACHE_DRIVER, status=NOT_IMPLEMENTED)
    )

    def _validate(self, path: str) -> None:
        """
        Apply zot's per-store checks (L{_checkStore}).
        """
        _checkStore(self, path)


@dataclass(frozen=True)
class StorageConfig:
    """
    C{storage}: where and how repositories are stored.

    The keys zotwist does not act on yet (their status says which) are
    parsed and typed all the same, so that implementing one is flipping its
    status, and each warns when given.  The scale-out keys: a
    C{storageDriver} named C{"local"} or C{"s3"} (L{S3DriverConfig}), a redis
    C{cacheDriver} (L{RedisCacheConfig}) with C{remoteCache}, and
    C{redirectBlobURL}.

    @ivar rootDirectory: the directory holding the repositories, made
        absolute.
    @ivar gcDelay: seconds an unreferenced blob is kept before GC.
    @ivar gcInterval: seconds between GC sweeps.
    @ivar gcTimeWindow: C{"HH:MM-HH:MM"} (UTC) in which sweeps may start, or
        L{None} for any time.
    @ivar storageDriver: the driver parameters as written, or L{None} for the
        local filesystem; L{s3} reads them.
    @ivar cacheDriver: the cache driver parameters as written, or L{None};
        L{redis} reads them.
    @ivar subPaths: route prefix -> L{SubPathConfig}.
    """

    rootDirectory: str = field(
        default=None, metadata=_zot(_Directory(), status=IMPLEMENTED, required=True)
    )
    dedupe: bool = field(default=True, metadata=_zot(_BOOL, status=IMPLEMENTED))
    remoteCache: bool = field(
        default=False, metadata=_zot(_BOOL, status=IMPLEMENTED)
    )
    gc: bool = field(default=True, metadata=_zot(_BOOL, status=IMPLEMENTED))
    gcDelay: float = field(
        default=3600.0, metadata=_zot(_DURATION, status=IMPLEMENTED)
    )
    gcInterval: float = field(
        default=3600.0, metadata=_zot(_DURATION, status=IMPLEMENTED)
    )
    gcTimeWindow: str | None = field(
        default=None, metadata=_zot(_GCTimeWindow(), status=IMPLEMENTED)
    )
    commit: bool = field(default=False, metadata=_zot(_BOOL, status=IMPLEMENTED))
    maxRepos: int = field(default=0, metadata=_zot(_COUNT, status=NOT_IMPLEMENTED))
    redirectBlobURL: bool = field(
        default=False, metadata=_zot(_BOOL, status=IMPLEMENTED)
    )
    fastRestart: bool = field(
        default=False, metadata=_zot(_BOOL, status=NOT_IMPLEMENTED)
    )
    retention: RetentionConfig | None = field(
        default=None, metadata=_zot(_Section(RetentionConfig), status=IMPLEMENTED)
    )
    storageDriver: dict | None = field(
        default=None, metadata=_zot(_STORAGE_DRIVER, status=IMPLEMENTED)
    )
    cacheDriver: dict | None = field(
        default=None, metadata=_zot(_CACHE_DRIVER, status=IMPLEMENTED)
    )
    subPaths: dict[str, SubPathConfig] = field(
        default_factory=dict,
        metadata=_zot(_MapOf(_Section(SubPathConfig)), status=IMPLEMENTED),
    )

    def _validate(self, path: str) -> None:
        """
        Apply zot's per-store checks, and refuse store roots that are equal
        or nested: two stores in one tree would see each other's files as
        repositories.
        """
        _checkStore(self, path)
        self._checkCluster(path)
        roots = [(_child(path, "rootDirectory"), self.rootDirectory)]
        for route, subPath in self.subPaths.items():
            subPathPath = _child(_child(path, "subPaths"), route)
            if not re.fullmatch(r"/[^/]+/?", route):
                raise _Invalid(
                    subPathPath,
                    "a sub-path is one leading path component such as \"/ci\": zot "
                    "routes a repository by the first component of its name only",
                )
            roots.append((_child(subPathPath, "rootDirectory"), subPath.rootDirectory))
        for (firstPath, first), (secondPath, second) in combinations(roots, 2):
            if first == second:
                raise _Invalid(secondPath, f"same directory as {firstPath} ({first})")
            for outer, inner, innerPath, outerPath in (
                (first, second, secondPath, firstPath),
                (second, first, firstPath, secondPath),
            ):
                if os.path.commonpath([outer, inner]) == outer:
                    raise _Invalid(
                        innerPath,
                        f"{inner} is inside {outerPath} ({outer}); store roots "
                        "must not nest",
                    )


    @property
    def driverName(self) -> str:
        """
        The storage driver's name: C{"local"} when no driver is given.
        """
        return _lookupFolded(self.storageDriver or {}, "name")[1] or "local"

    @property
    def s3(self) -> "S3DriverConfig | None":
        """
        The s3 driver's parameters, or L{None} when the store is local.
        """
        if self.driverName != "s3":
            return None
        return S3DriverConfig.fromDriver(self.storageDriver)

    @property
    def redis(self) -> "RedisCacheConfig | None":
        """
        The redis cache driver, or L{None} when there is none.
        """
        if self.cacheDriver is None:
            return None
        if _lookupFolded(self.cacheDriver, "name")[1] != "redis":
            return None
        return RedisCacheConfig.fromDriver(self.cacheDriver)

    def _checkCluster(self, path: str) -> None:
        """
        An s3 store keeps what its instances must agree on (tags, uploads,
        locks, the leader lease) in Redis, even when there is only one
        instance: it needs a redis C{cacheDriver}, and C{remoteCache}, without
        which zot would ignore the cache driver.
        """
        if self.driverName != "s3":
            return
        cachePath = _child(path, "cacheDriver")
        if self.cacheDriver is None:
            raise _Invalid(
                cachePath,
                "required with an s3 storageDriver: zotwist keeps tags, uploads and "
                'locks in Redis ({"name": "redis", "url": "redis://HOST:6379/0"})',
            )
        name = _lookupFolded(self.cacheDriver, "name")[1]
        if name != "redis":
            raise _Invalid(
                _child(cachePath, "name"),
                f'zotwist on s3 needs "redis", got {_describe(name)} (the {name} cache '
                "driver is not implemented)",
            )
        if not self.remoteCache:
            raise _Invalid(
                _child(path, "remoteCache"),
                "must be true with an s3 storageDriver and a redis cacheDriver "
                "(zot ignores the cacheDriver without it)",
            )
        if self.subPaths:
            raise _Invalid(
                _child(path, "subPaths"),
                "not supported with an s3 storageDriver yet: sub-paths are local "
                "stores, which the instances sharing the bucket cannot share",
            )

    def _warnings(self, path: str) -> "list[str]":
        """
        A cache driver without C{remoteCache} on local storage is ignored, as
        zot ignores it: the local store needs no cache (identical blobs are
        hard links).  Retention applies on S3 as on disk
        (L{zotwist.storage.s3.gc}).
        """
        if self.cacheDriver is not None and self.driverName == "local":
            return [
                f"{_child(path, 'cacheDriver')}: ignored without remoteCache, as zot does; "
                "the local store needs no cache"
            ]
        return []


# -- http ---------------------------------------------------------------------


@dataclass(frozen=True)
class TLSConfig:
    """
    C{http.tls} (and C{cluster.tls}): certificate files; C{cacert} turns on
    client certificate verification.  For C{http.tls} the files themselves
    are checked when the server is built (L{zotwist.tls}).
    """

    cert: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    key: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    cacert: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))


@dataclass(frozen=True)
class HTPasswdConfig:
    """
    C{http.auth.htpasswd}: a bcrypt htpasswd file.
    """

    path: str = field(
        default=None, metadata=_zot(_String(nonEmpty=True), required=True)
    )


@dataclass(frozen=True)
class LDAPConfig:
    """
    C{http.auth.ldap}.  C{bindDN} and C{bindPassword} are the older inline
    form of what C{credentialsFile} now holds; zot configs still carry them.
    """

    credentialsFile: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    port: int = field(default=389, metadata=_zot(_Port()))
    insecure: bool = field(default=False, metadata=_zot(_BOOL))
    startTLS: bool = field(default=False, metadata=_zot(_BOOL))
    skipVerify: bool = field(default=False, metadata=_zot(_BOOL))
    subtreeSearch: bool = field(default=False, metadata=_zot(_BOOL))
    address: str = field(
        default=None, metadata=_zot(_String(nonEmpty=True), required=True)
    )
    bindDN: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    bindPassword: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    userGroupAttribute: str | None = field(
        default=None, metadata=_zot(_OPTIONAL_STRING)
    )
    baseDN: str = field(
        default=None, metadata=_zot(_String(nonEmpty=True), required=True)
    )
    userAttribute: str = field(
        default=None, metadata=_zot(_String(nonEmpty=True), required=True)
    )
    userFilter: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    caCert: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))


@dataclass(frozen=True)
class UpstreamTokenEndpointConfig:
    """
    C{http.auth.bearer.upstreamTokenEndpoint}: a token service zot proxies.
    """

    realm: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    service: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    allowInsecureHttp: bool = field(default=False, metadata=_zot(_BOOL))


@dataclass(frozen=True)
class AWSSecretsManagerConfig:
    """
    C{http.auth.bearer.awsSecretsManager}: where bearer verification keys
    are fetched from.
    """

    region: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    secretName: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    refreshInterval: float = field(default=60.0, metadata=_zot(_POSITIVE_DURATION))


@dataclass(frozen=True)
class BearerConfig:
    """
    C{http.auth.bearer}: Docker token authentication (distribution's token
    spec): JWTs from an external token service, verified with the public
    key in C{cert}.  The other token sources zot knows (C{oidc},
    C{awsSecretsManager}, C{upstreamTokenEndpoint}) are refused until they
    are implemented, and C{realm}, C{service} and C{cert} are then all
    required: zot quietly turns bearer authentication off when one is
    missing, which would leave the registry open.
    """

    realm: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    service: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    cert: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    upstreamTokenEndpoint: UpstreamTokenEndpointConfig | None = field(
        default=None,
        metadata=_zot(
            _Section(UpstreamTokenEndpointConfig),
            status=REFUSED,
            refusal="the upstream token endpoint",
        ),
    )
    oidc: tuple[dict, ...] = field(
        default=(),
        metadata=_zot(_ListOf(_FREE_FORM), status=REFUSED, refusal="OIDC bearer tokens"),
    )
    awsSecretsManager: AWSSecretsManagerConfig | None = field(
        default=None,
        metadata=_zot(
            _Section(AWSSecretsManagerConfig),
            status=REFUSED,
            refusal="keys from AWS Secrets Manager",
        ),
    )

    def _validate(self, path: str) -> None:
        """
        A token can only be verified with all three of C{realm} (where
        clients get tokens), C{service} (the audience) and C{cert}.
        """
        for name in ("realm", "service", "cert"):
            if not getattr(self, name):
                raise _Invalid(
                    _child(path, name),
                    "required for bearer authentication (realm, service and cert)",
                )


@dataclass(frozen=True)
class MTLSConfig:
    """
    C{http.auth.mtls}: which client certificate attribute names the user.
    """

    identityAttributes: tuple[str, ...] = field(
        default=(),
        metadata=_zot(
            _ListOf(
                _Choice(
                    "CommonName",
                    "CN",
                    "Subject",
                    "DN",
                    "Email",
                    "rfc822name",
                    "URI",
                    "URL",
                    "DNSName",
                    "DNS",
                    foldCase=True,
                )
            )
        ),
    )
    uriSanPattern: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    uriSanIndex: int = field(default=0, metadata=_zot(_COUNT))
    dnsSanIndex: int = field(default=0, metadata=_zot(_COUNT))
    emailSanIndex: int = field(default=0, metadata=_zot(_COUNT))

    def _validate(self, path: str) -> None:
        """
        C{uriSanPattern} must compile (zot checks it at start-up too).
        """
        if self.uriSanPattern:
            try:
                re.compile(self.uriSanPattern)
            except re.error as e:
                raise _Invalid(
                    _child(path, "uriSanPattern"), f"not a regular expression: {e}"
                ) from None


@dataclass(frozen=True)
class AuthConfig:
    """
    C{http.auth}: how clients prove who they are.  htpasswd, LDAP, mTLS,
    bearer tokens and C{failDelay} are implemented (L{zotwist.auth}); the
    other methods are refused until they are.  C{openid} and
    C{sessionDriver} are kept whole until they are implemented.
    """

    failDelay: int = field(default=0, metadata=_zot(_COUNT))
    htpasswd: HTPasswdConfig | None = field(
        default=None, metadata=_zot(_Section(HTPasswdConfig))
    )
    ldap: LDAPConfig | None = field(default=None, metadata=_zot(_Section(LDAPConfig)))
    bearer: BearerConfig | None = field(
        default=None, metadata=_zot(_Section(BearerConfig), status=IMPLEMENTED)
    )
    openid: dict | None = field(
        default=None,
        metadata=_zot(_FREE_FORM, status=REFUSED, refusal="OpenID authentication"),
    )
    apikey: bool = field(
        default=False, metadata=_zot(_BOOL, status=REFUSED, refusal="API keys")
    )
    sessionKeysFile: str | None = field(
        default=None,
        metadata=_zot(_OPTIONAL_STRING, status=REFUSED, refusal="login sessions"),
    )
    sessionDriver: dict | None = field(
        default=None, metadata=_zot(_FREE_FORM, status=REFUSED, refusal="login sessions")
    )
    secureSession: bool | None = field(
        default=None, metadata=_zot(_BOOL, status=REFUSED, refusal="login sessions")
    )
    mtls: MTLSConfig | None = field(default=None, metadata=_zot(_Section(MTLSConfig)))

    def hasAuthentication(self) -> bool:
        """
        Whether any method that establishes a user is configured (zot's
        C{IsBasicAuthnEnabled} or C{IsBearerAuthEnabled}; mTLS is decided
        by C{http.tls.cacert}).
        """
        return bool(
            self.htpasswd or self.ldap or self.openid or self.apikey or self.bearer
        )


@dataclass(frozen=True)
class Condition:
    """
    A CEL expression that must hold for a policy entry to apply.
    """

    expression: str = field(
        default=None, metadata=_zot(_String(nonEmpty=True), required=True)
    )
    message: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))


_ACTIONS = _ListOf(_STRING, "an array of strings")


@dataclass(frozen=True)
class Policy:
    """
    One access-control policy entry (also C{adminPolicy}).
    """

    users: tuple[str, ...] = field(default=(), metadata=_zot(_STRINGS))
    actions: tuple[str, ...] = field(default=(), metadata=_zot(_ACTIONS))
    groups: tuple[str, ...] = field(default=(), metadata=_zot(_STRINGS))
    conditions: tuple[Condition, ...] = field(
        default=(),
        metadata=_zot(
            _ListOf(_Section(Condition)), status=REFUSED, refusal="policy conditions"
        ),
    )


@dataclass(frozen=True)
class PolicyGroup:
    """
    The policies of one repository glob in C{accessControl.repositories}.
    """

    policies: tuple[Policy, ...] = field(
        default=(), metadata=_zot(_ListOf(_Section(Policy)))
    )
    defaultPolicy: tuple[str, ...] = field(default=(), metadata=_zot(_ACTIONS))
    anonymousPolicy: tuple[str, ...] = field(default=(), metadata=_zot(_ACTIONS))


@dataclass(frozen=True)
class Group:
    """
    A named group of users in C{accessControl.groups}.
    """

    users: tuple[str, ...] = field(default=(), metadata=_zot(_STRINGS))


@dataclass(frozen=True)
class MetricsAccessConfig:
    """
    C{accessControl.metrics}: who may read the Prometheus endpoint.
    """

    users: tuple[str, ...] = field(default=(), metadata=_zot(_STRINGS))
    anonymousPolicy: tuple[str, ...] = field(default=(), metadata=_zot(_ACTIONS))


@dataclass(frozen=True)
class AccessControlConfig:
    """
    C{http.accessControl}: who may do what to which repositories (see
    L{zotwist.auth.policy} for the rules).  C{metrics} is typed and kept
    for the metrics endpoint, which does not exist yet.
    """

    repositories: dict[str, PolicyGroup] = field(
        default_factory=dict, metadata=_zot(_MapOf(_Section(PolicyGroup)))
    )
    adminPolicy: Policy | None = field(default=None, metadata=_zot(_Section(Policy)))
    groups: dict[str, Group] = field(
        default_factory=dict, metadata=_zot(_MapOf(_Section(Group)))
    )
    metrics: MetricsAccessConfig | None = field(
        default=None,
        metadata=_zot(_Section(MetricsAccessConfig), status=NOT_IMPLEMENTED),
    )

    def _validate(self, path: str) -> None:
        """
        Every repository glob must compile, as zot's C{verify} checks.
        """
        for pattern in self.repositories:
            try:
                compilePattern(pattern)
            except PatternError as e:
                raise _Invalid(
                    _child(_child(path, "repositories"), pattern),
                    f"not a valid repository glob: {e}",
                ) from None


@dataclass(frozen=True)
class MethodRatelimit:
    """
    A per-method limit in C{http.ratelimit.methods}.
    """

    method: str = field(
        default=None, metadata=_zot(_String(nonEmpty=True), required=True)
    )
    rate: int = field(default=None, metadata=_zot(_COUNT, required=True))


@dataclass(frozen=True)
class RatelimitConfig:
    """
    C{http.ratelimit}: requests per second from one client address, overall
    (C{rate}) and per HTTP method (C{methods}); see
    L{zotwist.web.ratelimit}.  A rate of 0 means no limit.
    """

    rate: int | None = field(default=None, metadata=_zot(_COUNT))
    methods: tuple[MethodRatelimit, ...] = field(
        default=(), metadata=_zot(_ListOf(_Section(MethodRatelimit)))
    )


@dataclass(frozen=True)
class HTTPConfig:
    """
    C{http}: the listening socket and everything about requests.

    C{tls}, C{accessControl} and the C{auth} methods htpasswd, LDAP, mTLS
    and bearer are implemented; the other C{auth} methods and policy
    C{conditions} are L{REFUSED} until they are: a registry that silently
    served everyone when its operator asked for logins or policies would
    fail open.

    @ivar address: the interface to listen on.
    @ivar port: the TCP port; 0 picks a free one.
    @ivar readTimeout: zot's limit on reading a whole request, in seconds,
        or L{None}.  L{ACCEPTED} but deliberately unused: zotwist streams
        bodies to disk and has no whole-body read timeout, because such a
        timeout is what broke slow pushes of large layers in zot (zot#4079,
        #4140).
    @ivar writeTimeout: the same for writing responses, likewise unused.
    @ivar compat: extra media types to accept (C{"docker2s2"}).
    """

    address: str = field(
        default="127.0.0.1", metadata=_zot(_STRING, status=IMPLEMENTED)
    )
    externalUrl: str | None = field(
        default=None, metadata=_zot(_OPTIONAL_STRING, status=NOT_IMPLEMENTED)
    )
    port: int = field(default=8080, metadata=_zot(_Port(), status=IMPLEMENTED))
    #: zotwist's own key, not zot's: worker processes sharing the port
    #: (L{zotwist.workers}).  One by default: more help pulls and pushes of
    #: blobs, but every worker re-reads an index.json another one changed,
    #: which makes concurrent manifest pushes to one large repository slower.
    workers: int = field(default=1, metadata=_zot(_Int(minimum=1), status=IMPLEMENTED))
    allowOrigin: str | None = field(
        default=None, metadata=_zot(_OPTIONAL_STRING, status=NOT_IMPLEMENTED)
    )
    readTimeout: float | None = field(
        default=None, metadata=_zot(_DURATION, status=ACCEPTED)
    )
    writeTimeout: float | None = field(
        default=None, metadata=_zot(_DURATION, status=ACCEPTED)
    )
    tls: TLSConfig | None = field(
        default=None, metadata=_zot(_Section(TLSConfig), status=IMPLEMENTED)
    )
    auth: AuthConfig | None = field(
        default=None, metadata=_zot(_Section(AuthConfig), status=IMPLEMENTED)
    )
    accessControl: AccessControlConfig | None = field(
        default=None,
        metadata=_zot(_Section(AccessControlConfig), status=IMPLEMENTED),
    )
    realm: str = field(default="zot", metadata=_zot(_STRING, status=IMPLEMENTED))
    ratelimit: RatelimitConfig | None = field(
        default=None, metadata=_zot(_Section(RatelimitConfig), status=IMPLEMENTED)
    )
    compat: tuple[str, ...] = field(
        default=(), metadata=_zot(_ListOf(_Choice("docker2s2")), status=NOT_IMPLEMENTED)
    )

    def _validate(self, path: str) -> None:
        """
        zot's C{verify} rules across C{tls}, C{auth} and C{accessControl}:
        TLS needs a certificate and its key, C{auth.mtls} needs C{tls.cacert},
        and access control needs a way to tell users apart (an
        authentication method, or client certificates through
        C{tls.cacert}) unless it only grants to anonymous callers.
        """
        _checkTransportAndLogin(self, path)
        if self.accessControl is None:
            return
        authenticated = (self.auth is not None and self.auth.hasAuthentication()) or bool(
            self.tls is not None and self.tls.cacert
        )
        if not authenticated and not containsOnlyAnonymousPolicy(self.accessControl):
            raise _Invalid(
                _child(path, "accessControl"),
                "needs an authentication method (http.auth htpasswd, ldap, openid, "
                "apikey or bearer, or client certificates through http.tls.cacert), "
                "or only anonymousPolicy entries",
            )


def _checkTransportAndLogin(http: "HTTPConfig", path: str) -> None:
    """
    zot's checks that involve both C{http.tls} and C{http.auth}: TLS needs
    a certificate and its key, and C{auth.mtls} needs C{tls.cacert}, the CA
    client certificates are verified against.  (The files themselves are
    read when the server is built, by L{zotwist.tls}.)
    """
    tlsPath = _child(path, "tls")
    if http.tls is not None:
        for name in ("cert", "key"):
            if not getattr(http.tls, name):
                raise _Invalid(_child(tlsPath, name), "required when http.tls is given")
    if http.auth is not None and http.auth.mtls is not None:
        if http.tls is None or not http.tls.cacert:
            raise _Invalid(
                _child(_child(path, "auth"), "mtls"),
                "needs http.tls.cacert: client certificates are verified against it",
            )


# -- log ----------------------------------------------------------------------

_LOG_LEVEL = _Choice("debug", "info", "warn", "error", "panic", "fatal", foldCase=True)


@dataclass(frozen=True)
class LogConfig:
    """
    C{log}.

    @ivar level: one of zot's levels, lower-case (C{"WARN"} is accepted and
        stored as C{"warn"}).
    @ivar output: a file to log to, or L{None} for standard output.
    @ivar audit: a separate file for the audit log, or L{None}.
    """

    level: str = field(default="debug", metadata=_zot(_LOG_LEVEL, status=IMPLEMENTED))
    output: str | None = field(
        default=None, metadata=_zot(_OPTIONAL_STRING, status=IMPLEMENTED)
    )
    audit: str | None = field(
        default=None, metadata=_zot(_OPTIONAL_STRING, status=IMPLEMENTED)
    )


# -- extensions ---------------------------------------------------------------


@dataclass(frozen=True)
class PrometheusConfig:
    """
    C{extensions.metrics.prometheus}.
    """

    path: str = field(default="/metrics", metadata=_zot(_STRING))


#: Paths the operational endpoints answer on, which the metrics cannot use.
_RESERVED_PATHS = ("/livez", "/readyz", "/startupz", "/openapi.json", "/swagger")


@dataclass(frozen=True)
class MetricsConfig:
    """
    C{extensions.metrics}: zot enables it by merely being present.
    """

    enable: bool = field(default=True, metadata=_zot(_BOOL))
    prometheus: PrometheusConfig = field(
        default=PrometheusConfig(), metadata=_zot(_Section(PrometheusConfig))
    )

    def _validate(self, path: str) -> None:
        """
        The metrics path must be a path of its own, not one the registry
        API answers on.
        """
        metricsPath = self.prometheus.path
        if (
            not metricsPath.startswith("/")
            or metricsPath.rstrip("/") == ""
            or metricsPath == "/v2"
            or metricsPath.startswith("/v2/")
        ):
            raise _Invalid(
                _child(_child(path, "prometheus"), "path"),
                'expected an absolute URL path outside "/v2", such as "/metrics", '
                f"got {_describe(metricsPath)}",
            )
        normalized = "/" + metricsPath.strip("/")
        for reserved in _RESERVED_PATHS:
            if normalized == reserved or normalized.startswith(reserved + "/"):
                raise _Invalid(
                    _child(_child(path, "prometheus"), "path"),
                    f"{json.dumps(metricsPath)} is where zotwist serves {reserved}; "
                    'choose another path, such as "/metrics"',
                )


@dataclass(frozen=True)
class ScrubConfig:
    """
    C{extensions.scrub}: periodic integrity checks, on when present.
    """

    enable: bool = field(default=True, metadata=_zot(_BOOL))
    interval: float = field(default=86400.0, metadata=_zot(_POSITIVE_DURATION))


@dataclass(frozen=True)
class TrivyConfig:
    """
    C{extensions.search.cve.trivy}.
    """

    dbRepository: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    javaDBRepository: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))


@dataclass(frozen=True)
class CVEConfig:
    """
    C{extensions.search.cve}.
    """

    updateInterval: float = field(default=86400.0, metadata=_zot(_POSITIVE_DURATION))
    trivy: TrivyConfig | None = field(
        default=None, metadata=_zot(_Section(TrivyConfig))
    )


@dataclass(frozen=True)
class SearchConfig:
    """
    C{extensions.search}: the GraphQL search API, on when present.
    """

    enable: bool = field(default=True, metadata=_zot(_BOOL))
    cve: CVEConfig | None = field(default=None, metadata=_zot(_Section(CVEConfig)))


@dataclass(frozen=True)
class LintConfig:
    """
    C{extensions.lint}: annotations every pushed manifest must carry.
    """

    enable: bool = field(default=False, metadata=_zot(_BOOL))
    mandatoryAnnotations: tuple[str, ...] = field(default=(), metadata=_zot(_STRINGS))


@dataclass(frozen=True)
class EnableConfig:
    """
    An extension configured by C{enable} alone (C{ui}, C{mgmt}, C{apikey}).
    """

    enable: bool = field(default=False, metadata=_zot(_BOOL))


@dataclass(frozen=True)
class TrustConfig:
    """
    C{extensions.trust}: signature verification with cosign or notation.
    """

    enable: bool = field(default=False, metadata=_zot(_BOOL))
    cosign: bool = field(default=False, metadata=_zot(_BOOL))
    notation: bool = field(default=False, metadata=_zot(_BOOL))


@dataclass(frozen=True)
class EventsConfig:
    """
    C{extensions.events}: CloudEvents sinks, kept whole until implemented.
    """

    enable: bool = field(default=False, metadata=_zot(_BOOL))
    sinks: tuple[dict, ...] = field(default=(), metadata=_zot(_ListOf(_FREE_FORM)))
    source: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))
    typePrefix: str | None = field(default=None, metadata=_zot(_OPTIONAL_STRING))


@dataclass(frozen=True)
class ExtensionsConfig:
    """
    C{extensions}: each extension is L{None} when absent.  Only C{metrics}
    is implemented (L{zotwist.ops.metrics}); each other one given warns on
    its own, so implementing one is flipping its status here.  C{sync} is
    kept whole (a dict) for now.
    """

    search: SearchConfig | None = field(
        default=None, metadata=_zot(_Section(SearchConfig), status=NOT_IMPLEMENTED)
    )
    sync: dict | None = field(
        default=None, metadata=_zot(_FREE_FORM, status=NOT_IMPLEMENTED)
    )
    metrics: MetricsConfig | None = field(
        default=None, metadata=_zot(_Section(MetricsConfig), status=IMPLEMENTED)
    )
    scrub: ScrubConfig | None = field(
        default=None, metadata=_zot(_Section(ScrubConfig), status=IMPLEMENTED)
    )
    lint: LintConfig | None = field(
        default=None, metadata=_zot(_Section(LintConfig), status=NOT_IMPLEMENTED)
    )
    ui: EnableConfig | None = field(
        default=None, metadata=_zot(_Section(EnableConfig), status=NOT_IMPLEMENTED)
    )
    mgmt: EnableConfig | None = field(
        default=None, metadata=_zot(_Section(EnableConfig), status=NOT_IMPLEMENTED)
    )
    apikey: EnableConfig | None = field(
        default=None, metadata=_zot(_Section(EnableConfig), status=NOT_IMPLEMENTED)
    )
    trust: TrustConfig | None = field(
        default=None, metadata=_zot(_Section(TrustConfig), status=NOT_IMPLEMENTED)
    )
    events: EventsConfig | None = field(
        default=None, metadata=_zot(_Section(EventsConfig), status=NOT_IMPLEMENTED)
    )


# -- scheduler, cluster -------------------------------------------------------


@dataclass(frozen=True)
class SchedulerConfig:
    """
    C{scheduler}: zot's background task workers (0 means zot's default).
    """

    numWorkers: int = field(default=0, metadata=_zot(_COUNT))


@dataclass(frozen=True)
class ClusterConfig:
    """
    C{cluster}: zot's scale-out, where members split repositories between
    them by a SipHash of the name.
    """

    members: tuple[str, ...] = field(default=(), metadata=_zot(_STRINGS))
    hashKey: str = field(default=None, metadata=_zot(_STRING, required=True))
    tls: TLSConfig | None = field(default=None, metadata=_zot(_Section(TLSConfig)))

    def _validate(self, path: str) -> None:
        """
        zot's checks: at least one member, and a 128-bit SipHash key.
        """
        if not self.members:
            raise _Invalid(_child(path, "members"), "expected at least one member")
        if len(self.hashKey) != 16:
            raise _Invalid(
                _child(path, "hashKey"),
                f"expected exactly 16 characters, got {len(self.hashKey)}",
            )


# -- the whole file -----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """
    A loaded, validated zot configuration.

    @ivar distSpecVersion: the distribution-spec version zotwist serves,
        which is always L{zotwist.DIST_SPEC_VERSION}: like zot, zotwist warns
        when the file names another and uses its own.
    @ivar storage: see L{StorageConfig}.
    @ivar http: see L{HTTPConfig}.
    @ivar log: see L{LogConfig}.
    @ivar extensions: see L{ExtensionsConfig}; L{None} when absent.
    @ivar scheduler: see L{SchedulerConfig}; L{None} when absent.
    @ivar cluster: see L{ClusterConfig}; L{None} when absent.
    @ivar warnings: one line per key zot knows that zotwist ignores, and for
        a differing C{distSpecVersion}.
    @ivar source: the file the config came from.
    @ivar raw: the parsed JSON document, as it was.
    """

    distSpecVersion: str = field(
        default=DIST_SPEC_VERSION, metadata=_zot(_STRING, status=IMPLEMENTED)
    )
    storage: StorageConfig = field(
        default=None,
        metadata=_zot(_Section(StorageConfig), status=IMPLEMENTED, required=True),
    )
    http: HTTPConfig = field(
        default=HTTPConfig(), metadata=_zot(_Section(HTTPConfig), status=IMPLEMENTED)
    )
    log: LogConfig = field(
        default=LogConfig(), metadata=_zot(_Section(LogConfig), status=IMPLEMENTED)
    )
    extensions: ExtensionsConfig | None = field(
        default=None, metadata=_zot(_Section(ExtensionsConfig), status=IMPLEMENTED)
    )
    scheduler: SchedulerConfig | None = field(
        default=None, metadata=_zot(_Section(SchedulerConfig), status=NOT_IMPLEMENTED)
    )
    cluster: ClusterConfig | None = field(
        default=None, metadata=_zot(_Section(ClusterConfig), status=NOT_IMPLEMENTED)
    )
    warnings: tuple[str, ...] = ()
    source: str = "<config>"
    raw: dict = field(default_factory=dict)


def parseConfig(document: Any, source: str = "<config>") -> Config:
    """
    Validate an already-parsed zot config document.

    @param document: the JSON document; anything but an object is an error.
    @param source: the name used in messages and stored in L{Config.source}.
    @raise ConfigError: if zotwist cannot run with it.
    """
    if not isinstance(document, dict):
        raise ConfigError(
            source,
            None,
            f"expected a JSON object at the top level, got {_describe(document)}",
        )
    walk = _Walk()
    try:
        config = _Section(Config).convert(document, "", IMPLEMENTED, walk)
    except _Invalid as e:
        raise ConfigError(source, e.keyPath, e.message) from None
    warnings = list(walk.warnings)
    if config.distSpecVersion != DIST_SPEC_VERSION:
        warnings.insert(
            0,
            f"distSpecVersion: the config says {config.distSpecVersion}, but the "
            f"server speaks {DIST_SPEC_VERSION} and uses that",
        )
    return dataclasses.replace(
        config,
        distSpecVersion=DIST_SPEC_VERSION,
        warnings=tuple(warnings),
        source=source,
        raw=copy.deepcopy(document),
    )


def loadConfig(path: str) -> Config:
    """
    Read and validate a zot config file.

    @param path: the file's path; messages name it as given.
    @raise ConfigError: if the file cannot be read, is not JSON, or is not a
        config zotwist can run with.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(
            path, None, f"cannot read the file: {e.strerror or e}"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(path, None, f"not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise ConfigError(path, None, "the file is empty; expected a JSON object")

    def refuseConstant(name: str) -> None:
        """
        Refuse C{NaN} and C{Infinity}, which Python's parser allows and JSON
        (and so zot) does not.
        """
        raise ValueError(f"{name} is not JSON")

    try:
        document = json.loads(text, parse_constant=refuseConstant)
    except json.JSONDecodeError as e:
        hint = ""
        if path.lower().endswith((".yaml", ".yml")):
            hint = " (zotwist reads zot's JSON config only; YAML is not supported yet)"
        raise ConfigError(
            path,
            None,
            f"line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}{hint}",
        ) from None
    except ValueError as e:
        raise ConfigError(path, None, f"invalid JSON: {e}") from None
    return parseConfig(document, path)


def keyStatuses() -> "dict[str, str]":
    """
    Every key of the schema with its effective status, for documentation
    and for tests that pin down what zotwist implements.

    Keys under free-key objects are shown with C{*} for the free key, as in
    C{storage.subPaths.*.rootDirectory}; keys under lists with C{[]}.

    @return: key path -> L{IMPLEMENTED}, L{NOT_IMPLEMENTED}, L{REFUSED} or
        L{ACCEPTED}.
    """
    statuses: dict[str, str] = {}

    def visit(kind: _Kind, path: str, status: str) -> None:
        """
        Record the status of every key under C{kind}, recursively.
        """
        if isinstance(kind, _ListOf):
            visit(kind.item, path + "[]", status)
        elif isinstance(kind, _MapOf):
            visit(kind.value, path + ".*", status)
        elif isinstance(kind, _Section):
            for name, setting in _settings(kind.cls).items():
                keyPath = f"{path}.{name}" if path else name
                keyStatus = setting.status or status
                statuses[keyPath] = keyStatus
                visit(setting.kind, keyPath, keyStatus)

    visit(_Section(Config), "", IMPLEMENTED)
    return statuses
