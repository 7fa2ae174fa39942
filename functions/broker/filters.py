"""A subscription's filter, with the semantics of a Knative Eventing Trigger (v1.22).

`parse_trigger_filter` reads the ``filter`` and ``filters`` fields of a spec shaped like a
Trigger's and returns a `TriggerFilter`; its `matches` says whether an event is delivered. The
embedded broker (`functions.broker`) calls it for each subscription; in production the Knative
Broker does this job and this module is not deployed, so it must agree with Knative:

- ``filters`` (exact, prefix, suffix, all, any, not) wins over ``filter`` when it has at least
  one entry; an empty ``filters`` list falls back to ``filter``; no filter at all matches every
  event. The entries of ``filters`` must all pass.
- ``filter.attributes`` matches exactly; an empty string value means "set to any non-empty
  value"; an empty ``attributes`` mapping matches everything.
- Matching reads CloudEvent context attributes and extensions only, never data. Names are
  lower case (``^[a-z][a-z0-9]*$``, as the webhook checks); values compare case-sensitively.
  A missing attribute fails exact, prefix and suffix (so ``not`` of one passes).
- Each dialect object holds exactly one dialect, and exact, prefix and suffix exactly one
  attribute. An empty dialect (``{}``, ``exact: {}``, ``all: []``, ``any: []``) is no filter
  at all: it neither passes nor fails, and ``all``/``any``/``not`` around it ignore it, so on
  its own it matches every event, as in Knative.

Where Knative accepts a spec and then silently ignores part of it, this module refuses it
instead, because an ignored filter delivers every event: an empty value in exact, prefix or
suffix, an unknown key (a typo such as ``exakt``), a value that is not a string. ``cesql`` is
refused too: this broker does not implement CloudEvents SQL.

An event is a plain mapping of attribute name to string value (``type``, ``source``, ``id``,
``subject``, ``time`` as its RFC 3339 text, extensions such as ``sessionid``); building it from
a CloudEvent is the codec's job. As in Knative, ``schemaurl`` reads ``dataschema`` and
``datamediatype`` is ``datacontenttype`` without its parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from functions.broker.errors import InvalidSpec

Event = Mapping[str, str]

# The webhook's rule for attribute names (trigger_validation.go, validAttributeName).
_ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9]*")
# Knative has no limit; one here keeps a hostile spec from exhausting the stack.
MAX_DEPTH = 32
_SINGLE_ATTRIBUTE_DIALECTS = ("exact", "prefix", "suffix")
_DIALECTS = (*_SINGLE_ATTRIBUTE_DIALECTS, "all", "any", "not", "cesql")
# Filters never see the payload, even when a caller passes a whole structured-mode event.
_DATA = frozenset({"data", "data_base64"})


class Result(Enum):
    """Knative's three-valued filter result. `NO_FILTER` is what an empty filter gives: it is
    neutral inside all/any, stays itself under not, and counts as a match at the top."""

    PASS = "pass"  # noqa: S105 (a filter result, not a password)
    FAIL = "fail"
    NO_FILTER = "no_filter"

    def and_(self, other: Result) -> Result:
        if self is Result.NO_FILTER:
            return other
        if other is Result.NO_FILTER:
            return self
        return Result.PASS if self is other is Result.PASS else Result.FAIL

    def or_(self, other: Result) -> Result:
        if self is Result.NO_FILTER:
            return other
        if other is Result.NO_FILTER:
            return self
        return Result.PASS if Result.PASS in (self, other) else Result.FAIL

    def negate(self) -> Result:
        if self is Result.NO_FILTER:
            return self
        return Result.FAIL if self is Result.PASS else Result.PASS


def lookup(event: Event, name: str) -> str | None:
    """The value a filter sees for attribute `name`, or None when the event does not have it."""
    if name in _DATA:
        return None
    if name == "schemaurl":  # the CloudEvents 0.3 name, still answered by Knative
        name = "dataschema"
    if name == "datamediatype":
        content_type = event.get("datacontenttype")
        return None if content_type is None else content_type.split(";", 1)[0].strip()
    return event.get(name)


@dataclass(frozen=True)
class NoFilter:
    def evaluate(self, event: Event) -> Result:
        return Result.NO_FILTER


_PREDICATES: dict[str, Callable[[str, str], bool]] = {
    "exact": str.__eq__,
    "prefix": str.startswith,
    "suffix": str.endswith,
}


@dataclass(frozen=True)
class Compare:
    """One attribute against one value: `dialect` is exact, prefix or suffix."""

    dialect: str
    attribute: str
    value: str

    def evaluate(self, event: Event) -> Result:
        actual = lookup(event, self.attribute)
        if actual is None:
            return Result.FAIL
        return Result.PASS if _PREDICATES[self.dialect](actual, self.value) else Result.FAIL


@dataclass(frozen=True)
class AllOf:
    filters: tuple[FilterNode, ...]

    def evaluate(self, event: Event) -> Result:
        result = Result.NO_FILTER
        for node in self.filters:
            result = result.and_(node.evaluate(event))
            if result is Result.FAIL:
                return result
        return result


@dataclass(frozen=True)
class AnyOf:
    filters: tuple[FilterNode, ...]

    def evaluate(self, event: Event) -> Result:
        result = Result.NO_FILTER
        for node in self.filters:
            result = result.or_(node.evaluate(event))
            if result is Result.PASS:
                return result
        return result


@dataclass(frozen=True)
class Not:
    filter: FilterNode

    def evaluate(self, event: Event) -> Result:
        return self.filter.evaluate(event).negate()


@dataclass(frozen=True)
class Attributes:
    """The older ``filter.attributes``: every pair must match exactly; an empty value asks
    only that the attribute be set to something non-empty."""

    pairs: tuple[tuple[str, str], ...]

    def evaluate(self, event: Event) -> Result:
        for name, wanted in self.pairs:
            actual = lookup(event, name)
            if actual is None or (wanted == "" and actual == ""):
                return Result.FAIL
            if wanted != "" and wanted != actual:
                return Result.FAIL
        return Result.PASS


FilterNode = NoFilter | Compare | AllOf | AnyOf | Not | Attributes


@dataclass(frozen=True)
class TriggerFilter:
    """A parsed subscription filter. `matches` is the broker's question: deliver or not."""

    root: FilterNode

    def result(self, event: Event) -> Result:
        return self.root.evaluate(event)

    def matches(self, event: Event) -> bool:
        return self.result(event) is not Result.FAIL


MATCH_ALL = TriggerFilter(NoFilter())


def parse_trigger_filter(spec: Mapping[str, Any]) -> TriggerFilter:
    """The filter of a Trigger-shaped spec. Reads only ``filter`` and ``filters``; both are
    validated even when ``filters`` wins, as the webhook does. Raises `InvalidSpec`."""
    if not isinstance(spec, Mapping):
        raise InvalidSpec(
            f"expected a mapping with `filter` and/or `filters`, got {_kind(spec)}", path="spec"
        )
    legacy = _parse_legacy(spec.get("filter"))
    raw_filters = spec.get("filters")
    if raw_filters is None:
        raw_filters = []
    nodes = _parse_list(raw_filters, "filters", depth=1)
    if nodes:
        return TriggerFilter(nodes[0] if len(nodes) == 1 else AllOf(nodes))
    return TriggerFilter(legacy)


def _parse_legacy(raw: Any) -> FilterNode:
    if raw is None:
        return NoFilter()
    if not isinstance(raw, Mapping):
        raise InvalidSpec(
            f"expected a mapping such as {{attributes: {{type: ...}}}}, got {_kind(raw)}",
            path="filter",
        )
    _refuse_unknown_keys(raw, ("attributes",), "filter")
    attributes = raw.get("attributes")
    if attributes is None:
        return NoFilter()
    path = "filter.attributes"
    if not isinstance(attributes, Mapping):
        raise InvalidSpec(
            f"expected a mapping of attribute name to value, got {_kind(attributes)}", path=path
        )
    pairs = []
    for name, value in attributes.items():
        _check_name(name, path)
        if not isinstance(value, str):
            raise InvalidSpec(
                f"the value of {name!r} must be a string (quote it), got {_kind(value)}",
                path=f"{path}.{name}",
            )
        pairs.append((name, value))
    return Attributes(tuple(pairs))


def _parse_list(raw: Any, path: str, *, depth: int) -> tuple[FilterNode, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise InvalidSpec(f"expected a list of filter expressions, got {_kind(raw)}", path=path)
    return tuple(
        _parse_expression(item, f"{path}[{index}]", depth=depth) for index, item in enumerate(raw)
    )


def _parse_expression(raw: Any, path: str, *, depth: int) -> FilterNode:
    if depth > MAX_DEPTH:
        raise InvalidSpec(
            f"filters nest deeper than {MAX_DEPTH} levels; flatten them with all/any", path=path
        )
    if not isinstance(raw, Mapping):
        raise InvalidSpec(
            f"expected a mapping with one dialect ({', '.join(_DIALECTS[:-1])}), got {_kind(raw)}",
            path=path,
        )
    _refuse_unknown_keys(raw, _DIALECTS, path)
    cesql = raw.get("cesql")
    if cesql is not None and cesql != "":
        raise InvalidSpec(
            "the cesql dialect (CloudEvents SQL) is not supported by the embedded broker; "
            "express the filter with exact, prefix, suffix, all, any and not",
            path=f"{path}.cesql",
            code="unsupported_filter",
        )
    present = [name for name in _DIALECTS if _is_set(name, raw.get(name))]
    if len(present) > 1:
        raise InvalidSpec(
            f"multiple dialects found ({', '.join(present)}): an expression holds exactly one; "
            "put each in its own entry of the list (or of an `all`)",
            path=path,
        )
    for name in _SINGLE_ATTRIBUTE_DIALECTS:
        if raw.get(name) is not None:
            node = _parse_single_attribute(name, raw[name], f"{path}.{name}")
            if present == [name]:
                return node
    for name in ("all", "any"):
        if raw.get(name) is not None:
            nodes = _parse_list(raw[name], f"{path}.{name}", depth=depth + 1)
            if present == [name]:
                return AllOf(nodes) if name == "all" else AnyOf(nodes)
    if raw.get("not") is not None:
        return Not(_parse_expression(raw["not"], f"{path}.not", depth=depth + 1))
    return NoFilter()


def _parse_single_attribute(dialect: str, raw: Any, path: str) -> FilterNode:
    if not isinstance(raw, Mapping):
        raise InvalidSpec(
            f"expected a mapping of one attribute name to a value, got {_kind(raw)}", path=path
        )
    if not raw:
        return NoFilter()
    if len(raw) != 1:
        names = ", ".join(sorted(str(name) for name in raw))
        raise InvalidSpec(
            f"{dialect} can have only one key-value, found {len(raw)} ({names}): write one "
            f"entry per attribute, e.g. all: [{{{dialect}: {{a: ...}}}}, {{{dialect}: {{b: ...}}}}]",
            path=path,
        )
    ((name, value),) = raw.items()
    _check_name(name, path)
    if not isinstance(value, str) or value == "":
        raise InvalidSpec(
            f"the value of {name!r} must be a non-empty string, got {_kind(value)}; "
            "to require only that the attribute is set, use filter.attributes with an empty value",
            path=f"{path}.{name}",
        )
    return Compare(dialect, name, value)


def _is_set(dialect: str, value: Any) -> bool:
    """Whether a dialect counts for the one-dialect rule: as in Knative, empty maps and lists
    do not, a `not` does as soon as it is there."""
    if value is None:
        return False
    if dialect == "not":
        return True
    try:
        return len(value) > 0
    except TypeError:  # a value of the wrong type counts; its own parser then refuses it
        return True


def _check_name(name: Any, path: str) -> None:
    if not isinstance(name, str) or not _ATTRIBUTE_NAME.fullmatch(name):
        raise InvalidSpec(
            f"invalid attribute name {name!r}: a name starts with a letter and has only lower "
            "case letters and digits (CloudEvents attribute names are lower case)",
            path=path,
        )


def _refuse_unknown_keys(raw: Mapping[Any, Any], known: Sequence[str], path: str) -> None:
    unknown = sorted(str(key) for key in raw if key not in known)
    if unknown:
        raise InvalidSpec(
            f"unknown field(s) {', '.join(unknown)}; expected one of {', '.join(known)}",
            path=path,
        )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "an empty string" if value == "" else f"string {value!r}"
    return type(value).__name__
