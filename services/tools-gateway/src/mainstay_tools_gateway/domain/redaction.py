"""Keeping secrets out of everything the gateway writes or returns.

Two rules: argument values under secret-looking keys never enter the audit
digest as themselves, and every secret value the vault handed to a call is
replaced by ``[REDACTED]`` wherever it appears afterwards (output, error
messages), so even a tool that echoes its credentials cannot leak them.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

__all__ = ["REDACTED", "Redactor", "argument_digest", "redact_arguments"]

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[-_]?key|authori[sz]ation|credential|private[-_]?key|cookie)",
    re.IGNORECASE,
)
# Secrets shorter than this would redact ordinary text ("ab" inside every word).
_MIN_SECRET = 4


def redact_arguments(value: Any) -> Any:
    """``value`` with the values of secret-looking keys replaced, at any depth."""
    if isinstance(value, dict):
        return {
            k: REDACTED if _SECRET_KEY.search(str(k)) else redact_arguments(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_arguments(v) for v in value]
    return value


def argument_digest(arguments: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of the redacted arguments."""
    canonical = json.dumps(
        redact_arguments(arguments), sort_keys=True, separators=(",", ":"), default=str
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class Redactor:
    """Replaces known secret values in strings and in JSON-like values."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: list[str] = []
        for secret in secrets or []:
            self.add(secret)

    def add(self, secret: str) -> None:
        if len(secret) >= _MIN_SECRET and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def value(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value
