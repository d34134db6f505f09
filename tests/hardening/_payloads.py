"""Hypothesis strategies for the mesh's messages: valid payloads of a registered topic, drawn
from its payload model's JSON Schema and kept only when the model accepts them, and
malformed messages (wrong field types, missing fields, bytes that are no JSON, broken
envelope headers), each with the words its dead letter's reason must contain.

Examples are drawn with a fixed seed per topic and no example database, so a run sends
the same messages every time.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mainstay_contracts import Header

if TYPE_CHECKING:
    from mainstay_contracts import TopicSpec

__all__ = [
    "Junk",
    "draw",
    "extra_fields",
    "junk_messages",
    "valid_payloads",
]

T = TypeVar("T")
Json = Any
_MAX_TEXT = 24
_MAX_ITEMS = 3


def draw(strategy: st.SearchStrategy[T], count: int, *, name: str) -> list[T]:
    """``count`` examples of ``strategy`` (fewer if it rejects too much), the same every run."""
    found: list[T] = []

    @seed(zlib.crc32(name.encode()))
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        found.append(value)

    collect()
    return found


# -- valid payloads -------------------------------------------------------------------------


def valid_payloads(spec: TopicSpec[Any]) -> st.SearchStrategy[dict[str, Json]]:
    """JSON objects the topic's payload model accepts, sometimes with unknown fields
    (which a consumer must ignore)."""
    schema = spec.payload.model_json_schema()
    defs = schema.get("$defs", {})

    def accepted(value: Json) -> dict[str, Json]:
        # Judged from the bytes, as a consumer judges them.
        assume(isinstance(value, dict) and _rejection(spec, json.dumps(value).encode()) is None)
        assert isinstance(value, dict)
        return value

    base = _from_schema(schema, defs)
    with_extras = st.tuples(base, extra_fields(spec)).map(lambda p: {**p[1], **p[0]})
    return st.one_of(base, with_extras).map(accepted)


def extra_fields(spec: TopicSpec[Any]) -> st.SearchStrategy[dict[str, Json]]:
    """Top-level fields the payload model does not declare."""
    known = set(spec.payload.model_fields) | {
        f.alias for f in spec.payload.model_fields.values() if f.alias
    }
    keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(
        lambda k: k not in known
    )
    return st.dictionaries(keys, _any_json(), min_size=1, max_size=3)


def _from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    """Values of the subset of JSON Schema pydantic writes for the contracts."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return st.deferred(lambda: _from_schema(target, defs))
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return st.one_of([_from_schema(option, defs) for option in schema[combinator]])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _from_schema(schema["allOf"][0], defs)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([_from_schema({**schema, "type": k}, defs) for k in kind])
    if kind is None:
        return _any_json()
    return _BY_TYPE[kind](schema, defs)


def _null(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    return st.none()


def _boolean(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    return st.booleans()


def _integer(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema:
        low = int(schema["exclusiveMinimum"]) + 1
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema:
        high = int(schema["exclusiveMaximum"]) - 1
    return st.integers(min_value=low, max_value=high)


def _number(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    return st.floats(
        min_value=schema.get("minimum", schema.get("exclusiveMinimum")),
        max_value=schema.get("maximum", schema.get("exclusiveMaximum")),
        exclude_min="exclusiveMinimum" in schema,
        exclude_max="exclusiveMaximum" in schema,
        allow_nan=False,
        allow_infinity=False,
    )


def _string(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", max(low, _MAX_TEXT)))
    if schema.get("format") == "date-time":
        return st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
    if "pattern" in schema:
        pattern: str = schema["pattern"]
        text = st.from_regex(pattern, fullmatch=pattern.endswith("$"))
        return text.filter(lambda s: low <= len(s) <= high)
    return st.text(st.characters(codec="utf-8"), min_size=low, max_size=min(high, low + _MAX_TEXT))


def _array(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    low = int(schema.get("minItems", 0))
    high = min(int(schema.get("maxItems", low + _MAX_ITEMS)), low + _MAX_ITEMS)
    items = _from_schema(schema.get("items", {}), defs)
    return st.lists(items, min_size=low, max_size=high)


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    if not properties:
        extra = schema.get("additionalProperties", True)
        values = _from_schema(extra, defs) if isinstance(extra, dict) else _any_json()
        high = min(int(schema.get("maxProperties", _MAX_ITEMS)), _MAX_ITEMS)
        keys = st.text(st.characters(codec="utf-8"), max_size=12)
        return st.dictionaries(keys, values, max_size=high)
    fixed = {name: _from_schema(properties[name], defs) for name in properties if name in required}
    optional = {
        name: _from_schema(properties[name], defs) for name in properties if name not in required
    }
    return st.fixed_dictionaries(fixed, optional=optional)


_BY_TYPE = {
    "null": _null,
    "boolean": _boolean,
    "integer": _integer,
    "number": _number,
    "string": _string,
    "array": _array,
    "object": _object,
}


def _any_json() -> st.SearchStrategy[Json]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(st.characters(codec="utf-8"), max_size=_MAX_TEXT),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=_MAX_ITEMS),
            st.dictionaries(
                st.text(st.characters(codec="utf-8"), max_size=8), inner, max_size=_MAX_ITEMS
            ),
        ),
        max_leaves=6,
    )


# -- malformed messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Junk:
    """A message a consumer must dead-letter as invalid, and why."""

    kind: str
    value: bytes | None
    reason: tuple[str, ...]
    """Fragments the dead letter's ``mainstay-error-message`` must contain."""
    header_changes: dict[str, str | None] = field(default_factory=dict)
    """Envelope headers to replace (a value) or drop (``None``)."""


def junk_messages(
    spec: TopicSpec[Any], valid: list[dict[str, Json]]
) -> dict[str, st.SearchStrategy[Junk]]:
    """Every kind of malformed message for ``spec``, by kind; ``valid`` are payloads to
    break (drawn from :func:`valid_payloads`)."""
    bases = st.sampled_from(valid)
    kinds = {
        "wrong-type": _wrong_type(spec, bases),
        "not-json": _not_json(spec),
        "not-an-object": _not_an_object(spec),
        "bad-envelope": _bad_envelope(spec),
    }
    if spec.payload.model_json_schema().get("required"):
        kinds["missing-field"] = _missing_field(spec, bases)
    return kinds


def _rejection(spec: TopicSpec[Any], value: bytes) -> ValidationError | None:
    try:
        spec.payload.model_validate_json(value)
    except ValidationError as exc:
        return exc
    return None


def _wrong_type(
    spec: TopicSpec[Any], bases: st.SearchStrategy[dict[str, Json]]
) -> st.SearchStrategy[Junk]:
    names = sorted(spec.payload.model_json_schema().get("properties", {}))

    @st.composite
    def build(draw: st.DrawFn) -> Junk:
        payload = dict(draw(bases))
        name = draw(st.sampled_from(names))
        payload[name] = draw(_any_json())
        value = json.dumps(payload).encode()
        rejection = _rejection(spec, value)
        # Pydantic's lax mode takes some other types (e.g. "5" for 5): those are no junk.
        assume(rejection is not None)
        assert rejection is not None
        assume(all(error["loc"][:1] == (name,) for error in rejection.errors()))
        return Junk("wrong-type", value, (spec.payload.__name__, name))

    return build()


def _missing_field(
    spec: TopicSpec[Any], bases: st.SearchStrategy[dict[str, Json]]
) -> st.SearchStrategy[Junk]:
    required = sorted(spec.payload.model_json_schema().get("required", ()))

    @st.composite
    def build(draw: st.DrawFn) -> Junk:
        payload = dict(draw(bases))
        name = draw(st.sampled_from(required))
        payload.pop(name, None)
        value = json.dumps(payload).encode()
        assume(_rejection(spec, value) is not None)
        return Junk("missing-field", value, (name, "Field required"))

    return build()


def _not_json(spec: TopicSpec[Any]) -> st.SearchStrategy[Junk]:
    def build(value: bytes) -> Junk:
        assume(_rejection(spec, value) is not None)
        try:
            json.loads(value)
        except ValueError:
            pass
        else:
            assume(False)
        return Junk("not-json", value, (spec.payload.__name__, "Invalid JSON"))

    return st.one_of(
        st.binary(min_size=1, max_size=64),
        # a JSON object cut short, and one with a string that is not UTF-8
        st.just(b'{"' + spec.key_field.encode() + b'": "cut'),
        st.just(b'{"' + spec.key_field.encode() + b'": "\xff\xfe"}'),
    ).map(build)


def _not_an_object(spec: TopicSpec[Any]) -> st.SearchStrategy[Junk]:
    def build(value: Json) -> Junk:
        return Junk("not-an-object", json.dumps(value).encode(), (spec.payload.__name__,))

    scalar_or_list = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=_MAX_TEXT),
        st.lists(st.integers(), max_size=_MAX_ITEMS),
    )
    return scalar_or_list.map(build)


def _bad_envelope(spec: TopicSpec[Any]) -> st.SearchStrategy[Junk]:
    text = st.text(st.characters(codec="ascii", min_codepoint=32), max_size=12)

    def missing(header: str) -> st.SearchStrategy[Junk]:
        return st.just(Junk("bad-envelope", None, (f"{header} is missing",), {header: None}))

    def replaced(
        header: str, values: st.SearchStrategy[str], reason: str
    ) -> st.SearchStrategy[Junk]:
        return values.map(lambda v: Junk("bad-envelope", None, (reason,), {header: v}))

    return st.one_of(
        missing(Header.ID),
        missing(Header.TYPE),
        missing(Header.SOURCE),
        replaced(Header.SPECVERSION, text.filter(lambda v: v != "1.0"), Header.SPECVERSION),
        replaced(
            Header.CONTENT_TYPE,
            text.filter(lambda v: not v.startswith("application/json")),
            "content-type",
        ),
        replaced(
            Header.TIME,
            text.filter(lambda v: not _is_time(v)),
            Header.TIME,
        ),
    )


def _is_time(value: str) -> bool:
    if not value:
        return True  # an empty ce_time is taken as absent
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
