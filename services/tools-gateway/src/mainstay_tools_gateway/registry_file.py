"""The registry file read at start: ``{"tools": [ToolSpec, ...]}`` as YAML or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mainstay_contracts.tools import ToolSpec

__all__ = ["RegistryFile", "load_registry_file"]


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: list[ToolSpec] = Field(default_factory=list)


def load_registry_file(path: str | Path) -> RegistryFile:
    """Parse and validate the file; errors name the file and the offending entry."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read tool registry file {file}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(
            f"tool registry file {file} is not valid {file.suffix or 'YAML'}: {exc}"
        ) from exc
    try:
        registry = RegistryFile.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise ValueError(f"tool registry file {file} is invalid: {problems}") from exc
    names = [t.name for t in registry.tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"tool registry file {file} names tools twice: {', '.join(duplicates)}")
    return registry
