"""Compatibility of event schemas within one major version.

A topic ``<owner>.<kind>.<subject>.vN`` may only evolve compatibly: old and new
code read and write it side by side during a rolling deploy, and messages
written by either stay on the topic for its retention. A breaking change gets a
new topic ``vN+1``. :func:`find_breaking_changes` compares the committed schemas
(``schemas/events``) with freshly generated ones and lists every violation.

Structural changes break in both directions::

    property removed                         breaking (a reader still needs it)
    property added, required                 breaking (old writers never send it)
    property became required                 breaking
    property added, optional                 fine
    type set changed (incl. null, $ref'd     breaking (integer -> string,
      models, array items, map values)                  integer | null -> integer)
    string format changed                    breaking
    enum value / union variant removed,      breaking
      or a free value restricted to an enum
    unknown fields newly forbidden           breaking (defeats "consumers ignore
                                                       unknown fields")
    key field changed, partitions reduced    breaking (per-key order, Kafka limit)

Value-domain changes depend on who reads the new schema. A ``cmd`` topic is
read by its owner, which must accept what older producers still send, so
narrowing breaks; an ``evt`` topic is written by its owner and read by
consumers that may still run the old model, so widening breaks::

                                             cmd          evt
    enum value / union variant added         fine         breaking
    bound tightened, pattern added           breaking     fine
    bound loosened, pattern removed          fine         breaking
    property became optional                 fine         breaking
    pattern or multipleOf changed            breaking     breaking

Titles, descriptions, defaults and examples never matter. Only local ``$ref``
(``#/...``) is followed, which is all pydantic emits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from mainstay_contracts._schema import TOPIC_METADATA_KEY

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

__all__ = ["BreakingChange", "compare_schemas", "find_breaking_changes"]

_KIND_RE: Final = re.compile(r"^[^.]+\.(?P<kind>evt|cmd)\.[^.]+\.v(?P<major>[0-9]+)$")
_UPPER_BOUNDS: Final = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_LOWER_BOUNDS: Final = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_MAX_DEPTH: Final = 64


@dataclass(frozen=True, order=True)
class BreakingChange:
    """One incompatible difference; ``path`` is empty for topic-level changes.

    ``path`` joins property names with ``.``; ``[]`` stands for array items,
    ``[i]`` for tuple positions and ``*`` for map values.
    """

    topic: str
    path: str
    reason: str

    def __str__(self) -> str:
        if self.path:
            return f"{self.topic}: field {self.path!r} {self.reason}"
        return f"{self.topic}: {self.reason}"


def find_breaking_changes(
    committed: Mapping[str, Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
) -> list[BreakingChange]:
    """Every breaking change from ``committed`` to ``current`` schemas (by topic name).

    A committed topic that is missing from ``current`` is breaking too: its
    producers and consumers still exist until they move to another version.
    New topics are always fine.
    """
    changes: list[BreakingChange] = []
    for topic in sorted(committed):
        if topic in current:
            changes.extend(compare_schemas(topic, committed[topic], current[topic]))
            continue
        match = _KIND_RE.match(topic)
        version = f"v{match['major']}" if match else "its major version"
        changes.append(
            BreakingChange(
                topic,
                "",
                f"is committed but no longer registered; removing a topic within {version} "
                "is breaking (keep it registered, or delete its committed schema "
                "deliberately once no producer or consumer uses it)",
            )
        )
    return changes


def compare_schemas(
    topic: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[BreakingChange]:
    """Breaking changes between two schemas of the same topic, sorted by path."""
    differ = _Differ(topic, old, new)
    differ.compare_metadata()
    differ.compare_node("", old, new, depth=0)
    return sorted(set(differ.changes))


def _kind_of(topic: str, schema: Mapping[str, Any]) -> str | None:
    meta = schema.get(TOPIC_METADATA_KEY)
    if isinstance(meta, dict) and meta.get("kind") in ("evt", "cmd"):
        return str(meta["kind"])
    match = _KIND_RE.match(topic)
    return match["kind"] if match else None


# bool before int: a bool is an int to isinstance.
_JSON_TYPES: Final = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for cls, name in _JSON_TYPES if isinstance(value, cls)), "object")


def _labels(branch: Mapping[str, Any]) -> set[str]:
    """The JSON types one union branch admits (``any`` when unconstrained)."""
    if "const" in branch:
        return {_json_type(branch["const"])}
    if isinstance(branch.get("enum"), list):
        return {_json_type(value) for value in branch["enum"]}
    declared = branch.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {str(item) for item in declared}
    inferred = {
        name
        for name, keywords in (
            ("object", ("properties", "additionalProperties")),
            ("array", ("items", "prefixItems")),
        )
        if any(keyword in branch for keyword in keywords)
    }
    return inferred or {"any"}


def _render_types(types: Iterable[str]) -> str:
    ordered = sorted(types, key=lambda name: (name == "null", name))
    return " | ".join(ordered) if ordered else "nothing"


def _render_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass(frozen=True)
class _Branch:
    schema: Mapping[str, Any]
    ref: str | None  # the $ref that led here, to stop on recursive models


class _Differ:
    def __init__(self, topic: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        self.topic = topic
        self.old_root = old
        self.new_root = new
        kind = _kind_of(topic, new) or _kind_of(topic, old)
        # An unknown kind gets both directions: the strictest reading.
        self.narrowing_breaks = kind != "evt"
        self.widening_breaks = kind != "cmd"
        self.changes: list[BreakingChange] = []
        self._open_refs: set[tuple[str, str]] = set()

    def report(self, path: str, reason: str) -> None:
        self.changes.append(BreakingChange(self.topic, path, reason))

    # -- topic level ---------------------------------------------------------------

    def compare_metadata(self) -> None:
        old = self.old_root.get(TOPIC_METADATA_KEY)
        new = self.new_root.get(TOPIC_METADATA_KEY)
        if not isinstance(old, dict) or not isinstance(new, dict):
            return
        if old.get("key_field") != new.get("key_field"):
            self.report(
                "",
                f"key field changed {old.get('key_field')!r} -> {new.get('key_field')!r} "
                "(messages of one entity would land on different partitions)",
            )
        old_parts, new_parts = old.get("partitions"), new.get("partitions")
        if isinstance(old_parts, int) and isinstance(new_parts, int) and new_parts < old_parts:
            self.report(
                "", f"partitions reduced {old_parts} -> {new_parts} (Kafka cannot shrink a topic)"
            )

    # -- schema nodes -------------------------------------------------------------

    def _resolve(self, ref: str, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if not ref.startswith("#"):
            return None
        node: Any = root
        for raw in ref[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, dict) else None

    def _branches(
        self,
        schema: Mapping[str, Any],
        root: Mapping[str, Any],
        ref: str | None = None,
        depth: int = 0,
    ) -> list[_Branch]:
        """Flatten ``$ref``, ``anyOf``/``oneOf`` and single ``allOf`` into concrete branches."""
        if depth > _MAX_DEPTH:
            return [_Branch(schema, ref)]
        target = schema.get("$ref")
        if isinstance(target, str):
            resolved = self._resolve(target, root)
            if resolved is None:
                return [_Branch(schema, target)]
            return self._branches(resolved, root, target, depth + 1)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list):
                return [
                    branch
                    for option in options
                    if isinstance(option, dict)
                    for branch in self._branches(option, root, None, depth + 1)
                ]
        every = schema.get("allOf")
        if isinstance(every, list) and len(every) == 1 and isinstance(every[0], dict):
            return self._branches(every[0], root, ref, depth + 1)
        return [_Branch(schema, ref)]

    def compare_node(
        self, path: str, old: Mapping[str, Any], new: Mapping[str, Any], depth: int
    ) -> None:
        if depth > _MAX_DEPTH:
            return
        old_branches = self._branches(old, self.old_root)
        new_branches = self._branches(new, self.new_root)
        old_types = set().union(*(_labels(b.schema) for b in old_branches))
        new_types = set().union(*(_labels(b.schema) for b in new_branches))
        if old_types != new_types:
            self.report(
                path, f"changed type {_render_types(old_types)} -> {_render_types(new_types)}"
            )
        self._compare_enum(path, old_branches, new_branches)
        for label in sorted(old_types & new_types):
            if label == "object":
                self._compare_object_branches(path, old_branches, new_branches, depth)
                continue
            old_one = _single(old_branches, label)
            new_one = _single(new_branches, label)
            if old_one is None or new_one is None:
                continue
            self._compare_constraints(path, old_one.schema, new_one.schema)
            if label == "string" and old_one.schema.get("format") != new_one.schema.get("format"):
                self.report(
                    path,
                    f"changed format {old_one.schema.get('format') or 'none'} -> "
                    f"{new_one.schema.get('format') or 'none'}",
                )
            if label == "array":
                self._compare_array(path, old_one.schema, new_one.schema, depth)

    def _compare_enum(self, path: str, old: list[_Branch], new: list[_Branch]) -> None:
        old_values = _enum_values(old)
        new_values = _enum_values(new)
        if old_values is None and new_values is None:
            return
        if old_values is None:
            assert new_values is not None
            self.report(path, f"is now restricted to {_render_values(new_values.values())}")
            return
        if new_values is None:
            if self.widening_breaks:
                self.report(
                    path, f"is no longer restricted to {_render_values(old_values.values())}"
                )
            return
        lost = [value for key, value in old_values.items() if key not in new_values]
        gained = [value for key, value in new_values.items() if key not in old_values]
        if lost:
            self.report(path, f"lost enum values {_render_values(lost)}")
        if gained and self.widening_breaks:
            self.report(
                path,
                f"gained enum values {_render_values(gained)} that consumers of the old schema reject",
            )

    def _compare_constraints(
        self, path: str, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        for keyword, is_upper in [(k, True) for k in _UPPER_BOUNDS] + [
            (k, False) for k in _LOWER_BOUNDS
        ]:
            before, after = old.get(keyword), new.get(keyword)
            if before == after:
                continue
            if not (_is_number(before) or before is None) or not (
                _is_number(after) or after is None
            ):
                self.report(
                    path, f"changed {keyword} {_render_bound(before)} -> {_render_bound(after)}"
                )
                continue
            if before is None:
                narrowed = True
            elif after is None:
                narrowed = False
            else:
                narrowed = after < before if is_upper else after > before
            if narrowed and self.narrowing_breaks:
                self.report(
                    path, f"tightened {keyword} {_render_bound(before)} -> {_render_bound(after)}"
                )
            elif not narrowed and self.widening_breaks:
                self.report(
                    path, f"loosened {keyword} {_render_bound(before)} -> {_render_bound(after)}"
                )
        for keyword in ("pattern", "multipleOf"):
            before, after = old.get(keyword), new.get(keyword)
            if before == after:
                continue
            if before is None and not self.narrowing_breaks:
                continue
            if after is None and not self.widening_breaks:
                continue
            self.report(
                path, f"changed {keyword} {_render_bound(before)} -> {_render_bound(after)}"
            )

    def _compare_array(
        self, path: str, old: Mapping[str, Any], new: Mapping[str, Any], depth: int
    ) -> None:
        old_items, new_items = old.get("items"), new.get("items")
        if isinstance(old_items, dict) or isinstance(new_items, dict):
            self.compare_node(
                f"{path}[]",
                old_items if isinstance(old_items, dict) else {},
                new_items if isinstance(new_items, dict) else {},
                depth + 1,
            )
        old_tuple = old.get("prefixItems") or []
        new_tuple = new.get("prefixItems") or []
        if len(old_tuple) != len(new_tuple):
            self.report(path, f"changed tuple length {len(old_tuple)} -> {len(new_tuple)}")
        for index, (before, after) in enumerate(zip(old_tuple, new_tuple, strict=False)):
            if isinstance(before, dict) and isinstance(after, dict):
                self.compare_node(f"{path}[{index}]", before, after, depth + 1)

    def _compare_object_branches(
        self, path: str, old: list[_Branch], new: list[_Branch], depth: int
    ) -> None:
        old_objects = [b for b in old if "object" in _labels(b.schema)]
        new_objects = [b for b in new if "object" in _labels(b.schema)]
        if len(old_objects) == 1 and len(new_objects) == 1:
            self._compare_object(path, old_objects[0], new_objects[0], depth)
            return
        old_by_key = dict(_variant_keys(old_objects))
        new_by_key = dict(_variant_keys(new_objects))
        for key, branch in old_by_key.items():
            if key in new_by_key:
                self._compare_object(path, branch, new_by_key[key], depth)
            else:
                self.report(path, f"lost union variant {key}")
        if self.widening_breaks:
            for key in new_by_key.keys() - old_by_key.keys():
                self.report(
                    path, f"gained union variant {key} that consumers of the old schema reject"
                )

    def _compare_object(self, path: str, old: _Branch, new: _Branch, depth: int) -> None:
        guard = (old.ref or "", new.ref or "")
        if old.ref and new.ref and guard in self._open_refs:
            return  # a recursive model: this pair is already being compared further up
        self._open_refs.add(guard)
        try:
            self._compare_properties(path, old.schema, new.schema, depth)
        finally:
            self._open_refs.discard(guard)

    def _compare_properties(
        self, path: str, old: Mapping[str, Any], new: Mapping[str, Any], depth: int
    ) -> None:
        old_props: Mapping[str, Any] = old.get("properties") or {}
        new_props: Mapping[str, Any] = new.get("properties") or {}
        old_required = set(old.get("required") or ())
        new_required = set(new.get("required") or ())
        for name in sorted(old_props):
            where = _join(path, name)
            if name not in new_props:
                self.report(where, "was removed")
                continue
            if isinstance(old_props[name], dict) and isinstance(new_props[name], dict):
                self.compare_node(where, old_props[name], new_props[name], depth + 1)
            if name in new_required and name not in old_required:
                self.report(where, "became required")
            elif name in old_required and name not in new_required and self.widening_breaks:
                self.report(where, "became optional; consumers of the old schema require it")
        for name in sorted(new_props.keys() - old_props.keys()):
            if name in new_required:
                self.report(_join(path, name), "was added as a required field")
        old_extra = old.get("additionalProperties", True)
        new_extra = new.get("additionalProperties", True)
        if new_extra is False and old_extra is not False:
            self.report(path, "no longer accepts unknown fields (additionalProperties: false)")
        if isinstance(old_extra, dict) or isinstance(new_extra, dict):
            self.compare_node(
                _join(path, "*"),
                old_extra if isinstance(old_extra, dict) else {},
                new_extra if isinstance(new_extra, dict) else {},
                depth + 1,
            )


def _single(branches: list[_Branch], label: str) -> _Branch | None:
    matching = [b for b in branches if label in _labels(b.schema)]
    return matching[0] if len(matching) == 1 else None


def _enum_values(branches: list[_Branch]) -> dict[str, Any] | None:
    """The allowed values by canonical text, or ``None`` when not an enumeration.

    ``null`` branches do not count: ``Literal["a"] | None`` is the enumeration
    ``["a"]`` (the nullability is the type check's business).
    """
    values: dict[str, Any] = {}
    restricted = False
    for branch in branches:
        schema = branch.schema
        if "const" in schema:
            options = [schema["const"]]
        elif isinstance(schema.get("enum"), list):
            options = list(schema["enum"])
        elif _labels(schema) == {"null"}:
            continue
        else:
            return None
        restricted = True
        values.update((_render_value(option), option) for option in options)
    return values if restricted else None


def _variant_keys(branches: list[_Branch]) -> Iterator[tuple[str, _Branch]]:
    """Name each object variant of a union by its discriminating constants.

    Variants of a discriminated union differ by a ``const`` property (pydantic
    renders ``Literal`` tags that way); other unions fall back to the model
    title, then to the position.
    """
    for index, branch in enumerate(branches):
        props = branch.schema.get("properties") or {}
        tags = sorted(
            f"{name}={_render_value(sub['const'])}"
            for name, sub in props.items()
            if isinstance(sub, dict) and "const" in sub
        )
        if tags:
            yield ", ".join(tags), branch
        elif isinstance(branch.schema.get("title"), str):
            yield repr(branch.schema["title"]), branch
        else:
            yield f"#{index}", branch


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _render_values(values: Iterable[Any]) -> str:
    return ", ".join(sorted(_render_value(value) for value in values))


def _render_bound(value: Any) -> str:
    return "none" if value is None else _render_value(value)
