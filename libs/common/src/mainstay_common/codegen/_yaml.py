"""A small, deterministic YAML emitter for generated files.

PyYAML is a development dependency only, and the generated files need no more
than block mappings, block sequences and scalars. Strings stay plain when that
is unambiguous under YAML 1.1 and 1.2 and are double-quoted otherwise, so every
reader (PyYAML, kubectl, Strimzi, AsyncAPI tooling) parses back the same data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["dump_yaml"]

# Letters first (so nothing numeric, no indicator characters), then a safe alphabet.
_PLAIN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*")
# Words YAML 1.1 resolves to booleans or null.
_RESERVED: Final = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def dump_yaml(data: Mapping[str, Any] | Sequence[Any], *, header: str = "") -> str:
    """``data`` as block-style YAML, preceded by ``header`` as ``#`` comment lines.

    Mapping order is kept as given: callers sort when order carries no meaning.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if _is_block(data):
        lines.extend(_block(data))
    else:
        lines.append(_scalar(data))
    return "\n".join(lines) + "\n"


def _is_block(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) and len(value) > 0


def _block(value: Mapping[str, Any] | Sequence[Any]) -> list[str]:
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"YAML keys must be strings, got {key!r}")
            if _is_block(item):
                lines.append(f"{_string(key)}:")
                lines.extend(f"  {line}" for line in _block(item))
            else:
                lines.append(f"{_string(key)}: {_scalar(item)}")
        return lines
    for item in value:
        if _is_block(item):
            first, *rest = _block(item)
            lines.append(f"- {first}")
            lines.extend(f"  {line}" for line in rest)
        else:
            lines.append(f"- {_scalar(item)}")
    return lines


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping | list | tuple):
        return "{}" if isinstance(value, Mapping) else "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML: {value!r}")


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"cannot write the non-finite number {value!r}")
    text = repr(value)
    # YAML 1.1 floats need a dot in the mantissa: 1e-05 would read as a string.
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _string(value: str) -> str:
    if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
        return value
    return '"' + "".join(_escape(char) for char in value) + '"'


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    # YAML readers reject C0/C1 controls, surrogates and non-characters unescaped,
    # and fold the Unicode line separators.
    if (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or code in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF)
    ):
        return f"\\u{code:04x}"
    return char
