"""Naming what is wrong with data pydantic refused, in one line for a person to read."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["describe_validation_error"]


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every invalid field, e.g. ``probe_id: Field required``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(loc) for loc in item["loc"]) or "<payload>"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
