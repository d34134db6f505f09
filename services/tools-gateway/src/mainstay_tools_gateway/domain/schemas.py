"""JSON Schema checks of tool arguments and outputs, with feedback a model can act on.

Every problem names where it is (a JSON pointer such as ``/items/2/qty``) and
what is wrong, so an agent can correct its call. Schemas are checked when a
tool is registered, so a broken schema is refused then, not at call time.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from mainstay_contracts.tools import CallProblem

if TYPE_CHECKING:
    from collections.abc import Iterable

    from jsonschema.exceptions import ValidationError

__all__ = ["SchemaCheck", "closest_names", "schema_problem"]

_MAX_PROBLEMS = 20
_MAX_MESSAGE = 300


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema (2020-12), or ``None``."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        message = str(exc.message)[:_MAX_MESSAGE]
        return message + (f" (at /{where})" if where else "")
    return None


def _pointer(error: ValidationError) -> str:
    return "".join(f"/{part}" for part in error.absolute_path)


def _message(error: ValidationError) -> str:
    text = error.message
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    return text


class SchemaCheck:
    """A compiled schema; :meth:`problems` lists what a document gets wrong."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._validator = Draft202012Validator(schema)

    def problems(self, document: Any) -> list[CallProblem]:
        errors = sorted(self._validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        return [
            CallProblem(path=_pointer(error), message=_message(error))
            for error in errors[:_MAX_PROBLEMS]
        ]


def closest_names(name: str, names: Iterable[str], *, limit: int = 3) -> list[str]:
    """The registered names closest to a mistyped one (best first)."""
    pool = sorted(set(names))
    found = difflib.get_close_matches(name, pool, n=limit, cutoff=0.5)
    if len(found) < limit:
        lowered = name.lower()
        found += [n for n in pool if lowered in n.lower() and n not in found][: limit - len(found)]
    return found
