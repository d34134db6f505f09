"""Why a generation run could not produce its artefacts."""

from __future__ import annotations

__all__ = ["CodegenError"]


class CodegenError(RuntimeError):
    """A generator failed: a tool is missing, protoc rejected a file, a hook raised.

    The message is written for the developer running ``./dev gen``: it says
    what failed and what to do about it.
    """
