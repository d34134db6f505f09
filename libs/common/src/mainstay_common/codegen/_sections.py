"""Generated sections inside hand-written Markdown files.

A section sits between two marker comments::

    <!-- generated: topic-map (./dev gen; edits here are overwritten) -->
    ...
    <!-- end generated -->

Only what lies between the markers belongs to the generator; the prose around
it is the author's. ``splice`` puts fresh bodies between the markers, and adds
a section the file lacks at its end, so a new document or a new section needs
no hand-made markers. A marker the generator does not know, or one left open,
is an error: silently keeping or dropping it would hide a stale document.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from mainstay_common.codegen._errors import CodegenError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["END_MARKER", "begin_marker", "read_sections", "splice", "stale_sections"]

END_MARKER: Final = "<!-- end generated -->"
_BEGIN: Final = re.compile(r"^<!-- generated: (?P<name>[a-z0-9-]+)\b.*-->\s*$")
_END: Final = re.compile(r"^<!-- end generated\b.*-->\s*$")


def begin_marker(name: str) -> str:
    return f"<!-- generated: {name} (./dev gen; edits here are overwritten) -->"


def splice(text: str, sections: Mapping[str, str], *, where: str) -> str:
    """``text`` with each section's body between its markers (appended when absent).

    ``where`` names the file in errors. Bodies are written as given, framed by
    the markers and one blank line each side, so Markdown renders them as blocks.
    """
    lines = text.splitlines(keepends=True)
    spans = _spans(lines, where=where)
    unknown = sorted(spans.keys() - sections.keys())
    if unknown:
        raise CodegenError(
            f"{where}: unknown generated section(s) {', '.join(unknown)}; "
            f"known here: {', '.join(sorted(sections))}"
        )
    out: list[str] = []
    position = 0
    for name, (start, end) in sorted(spans.items(), key=lambda item: item[1]):
        out.extend(lines[position:start])
        out.append(_block(name, sections[name]))
        position = end + 1
    out.extend(lines[position:])
    result = "".join(out)
    for name, body in sections.items():
        if name not in spans:
            result = result.rstrip("\n") + "\n\n" if result.strip() else ""
            result += _block(name, body)
    return result


def read_sections(text: str, *, where: str) -> dict[str, str]:
    """The text of every generated section of ``text`` (markers included), by name."""
    lines = text.splitlines(keepends=True)
    return {
        name: "".join(lines[start : end + 1])
        for name, (start, end) in _spans(lines, where=where).items()
    }


def stale_sections(old: str, new: str, *, where: str) -> list[str]:
    """Names of the sections that differ (or exist in only one) between two versions."""
    try:
        before = read_sections(old, where=where)
    except CodegenError:
        before = {}
    after = read_sections(new, where=where)
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )


def _block(name: str, body: str) -> str:
    return f"{begin_marker(name)}\n\n{body.strip(chr(10))}\n\n{END_MARKER}\n"


def _spans(lines: list[str], *, where: str) -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    open_name: str | None = None
    open_at = 0
    for number, line in enumerate(lines):
        begin = _BEGIN.match(line)
        if begin:
            if open_name is not None:
                raise CodegenError(
                    f"{where}:{number + 1}: section {begin['name']} starts inside section "
                    f"{open_name} (line {open_at + 1}); close it with {END_MARKER}"
                )
            if begin["name"] in spans:
                raise CodegenError(f"{where}:{number + 1}: section {begin['name']} appears twice")
            open_name, open_at = begin["name"], number
        elif _END.match(line):
            if open_name is None:
                raise CodegenError(f"{where}:{number + 1}: {END_MARKER} without a section")
            spans[open_name] = (open_at, number)
            open_name = None
    if open_name is not None:
        raise CodegenError(
            f"{where}:{open_at + 1}: section {open_name} is never closed with {END_MARKER}"
        )
    return spans
