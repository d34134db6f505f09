"""Orchestration: render every artefact, compare with the tree, write or report.

Every generator returns ``{repo-relative path: bytes}``; the pipeline owns a
fixed set of locations in the repository (below) and treats any difference
between what it renders and what is there as drift: a changed file, a missing
one, or an extra one nothing generates any more. ``generate`` resolves drift
by writing; ``check`` only reports it. Both refuse a breaking change to an event
schema, judged against the committed copy (or a git revision with ``base``).
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from mainstay_common.codegen._asyncapi import ASYNCAPI_DIR, asyncapi_documents, asyncapi_files
from mainstay_common.codegen._docs import doc_files, doc_targets
from mainstay_common.codegen._errors import CodegenError
from mainstay_common.codegen._events import (
    EVENTS_DIR,
    TOPICS_FILE,
    event_files,
    load_registry,
    read_event_schemas,
    topics_yaml,
)
from mainstay_common.codegen._proto import (
    GENERATED_SUFFIXES,
    PROTO_OUT,
    PROTO_PACKAGE,
    PROTO_SRC,
    LintResult,
    buf_lint,
    generate_proto,
)
from mainstay_common.codegen._sections import stale_sections
from mainstay_common.files import write_atomically
from mainstay_contracts import BreakingChange, find_breaking_changes

if TYPE_CHECKING:
    from pathlib import Path

    from mainstay_contracts import TopicRegistry

__all__ = [
    "Drift",
    "Report",
    "check",
    "committed_files",
    "drift",
    "find_root",
    "generate",
    "render",
]

_PROTO_TREE: Final = f"{PROTO_OUT}/{PROTO_PACKAGE}"
_PROTO_NAMES: Final = ("__init__.py", "py.typed")
_DIFF_LINES: Final = 40
_GIT_TIMEOUT_S: Final = 60.0

DriftStatus = Literal["changed", "missing", "extra"]


@dataclass(frozen=True)
class Drift:
    """One generated file that differs from the tree.

    ``missing``: generated but absent from the tree; ``extra``: in the tree but
    no longer generated; ``changed``: different bytes (``diff`` shows the start).
    ``sections`` names the generated sections that differ in a Markdown file
    whose prose is hand-written (``README.md``).
    """

    path: str
    status: DriftStatus
    diff: str = ""
    sections: tuple[str, ...] = ()


@dataclass
class Report:
    """What a ``gen`` or ``check`` run found and did."""

    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    stale: list[Drift] = field(default_factory=list)
    breaking: list[BreakingChange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lint: LintResult | None = None

    @property
    def ok(self) -> bool:
        lint_ok = self.lint is None or self.lint.ok
        return not (self.stale or self.breaking or self.problems) and lint_ok


def find_root(start: Path) -> Path:
    """The workspace root at or above ``start`` (holds the uv workspace and ``schemas/``)."""
    for candidate in (start, *start.parents):
        pyproject = candidate / "pyproject.toml"
        if (
            pyproject.is_file()
            and (candidate / "schemas").is_dir()
            and "[tool.uv.workspace]" in pyproject.read_text(encoding="utf-8")
        ):
            return candidate
    raise CodegenError(f"no Mainstay workspace at or above {start}; pass --root")


def render(root: Path, registry: TopicRegistry | None = None) -> dict[str, bytes]:
    """Every generated artefact for the tree at ``root``, by repo-relative path."""
    registry = load_registry() if registry is None else registry
    files = event_files(registry)
    files[TOPICS_FILE] = topics_yaml(registry)
    documents = asyncapi_documents(root)
    files.update(asyncapi_files(root, documents))
    files.update(doc_files(root, registry, documents))
    for relative, content in generate_proto(root / PROTO_SRC).items():
        files[f"{PROTO_OUT}/{relative}"] = content
    return dict(sorted(files.items()))


def committed_files(root: Path) -> dict[str, bytes]:
    """The files in the tree that the generators own, by repo-relative path."""
    # The READMEs are listed from the same function that decides which ones get
    # generated sections, so a README is never "extra" and never removed.
    paths: list[Path] = [
        *(root / EVENTS_DIR).glob("*.json"),
        *(root / ASYNCAPI_DIR).glob("*.yaml"),
        root / TOPICS_FILE,
        *(_path(root, target) for target in doc_targets(root)),
    ]
    proto_tree = _path(root, _PROTO_TREE)
    if proto_tree.is_dir():
        paths.extend(
            path
            for path in proto_tree.rglob("*")
            if "__pycache__" not in path.parts
            and (path.name in _PROTO_NAMES or path.name.endswith(GENERATED_SUFFIXES))
        )
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(paths)
        if path.is_file()
    }


def generate(
    root: Path, *, registry: TopicRegistry | None = None, allow_breaking: bool = False
) -> Report:
    """Regenerate every artefact in place.

    Nothing is written when an event schema would change incompatibly, or a
    committed one cannot be read to tell, unless ``allow_breaking`` (for a topic
    that nobody produces or consumes yet).
    """
    expected = render(root, registry)
    actual = committed_files(root)
    report = Report()
    _judge_compatibility(report, _events_only(actual), _events_only(expected))
    if (report.breaking or report.problems) and not allow_breaking:
        return report
    report.breaking, report.problems = [], []
    for path, content in expected.items():
        if actual.get(path) != content:
            _write(_path(root, path), content)
            report.written.append(path)
    for path in sorted(actual.keys() - expected.keys()):
        _path(root, path).unlink()
        report.removed.append(path)
    _prune_proto_dirs(root)
    return report


def check(root: Path, *, registry: TopicRegistry | None = None, base: str | None = None) -> Report:
    """Report drift between the tree and fresh output, breaking changes, and buf lint.

    ``base`` names a git revision whose ``schemas/events`` is the reference for
    compatibility (CI passes the merge base, so a breaking change committed
    together with its regenerated schema is still caught); by default the
    schemas in the tree are the reference.
    """
    expected = render(root, registry)
    actual = committed_files(root)
    report = Report()
    reference = _events_only(actual) if base is None else _git_event_files(root, base)
    _judge_compatibility(report, reference, _events_only(expected))
    report.stale = drift(expected, actual)
    report.lint = buf_lint(root)
    return report


def drift(expected: dict[str, bytes], actual: dict[str, bytes]) -> list[Drift]:
    found: list[Drift] = []
    for path in sorted(expected.keys() | actual.keys()):
        if path not in actual:
            found.append(Drift(path, "missing"))
        elif path not in expected:
            found.append(Drift(path, "extra"))
        elif expected[path] != actual[path]:
            diff = _diff(path, actual[path], expected[path])
            found.append(
                Drift(path, "changed", diff, _sections(path, actual[path], expected[path]))
            )
    return found


def _sections(path: str, old: bytes, new: bytes) -> tuple[str, ...]:
    if not path.endswith(".md"):
        return ()
    try:
        return tuple(stale_sections(old.decode(), new.decode(), where=path))
    except (UnicodeDecodeError, CodegenError):
        return ()


def _judge_compatibility(
    report: Report, reference: dict[str, bytes], current: dict[str, bytes]
) -> None:
    committed, problems = read_event_schemas(reference)
    fresh, _ = read_event_schemas(current)
    report.problems.extend(problems)
    report.breaking.extend(find_breaking_changes(committed, fresh))


def _events_only(files: dict[str, bytes]) -> dict[str, bytes]:
    prefix = f"{EVENTS_DIR}/"
    return {
        path: content
        for path, content in files.items()
        if path.startswith(prefix) and path.endswith(".json")
    }


def _git_event_files(root: Path, base: str) -> dict[str, bytes]:
    git = shutil.which("git")
    if git is None:
        raise CodegenError("--base needs git on PATH")
    listing = _git(git, root, "ls-tree", "--name-only", "-z", base, "--", f"{EVENTS_DIR}/")
    return {
        name: _git(git, root, "show", f"{base}:{name}")
        for name in sorted(listing.decode().split("\0"))
        if name.endswith(".json")
    }


def _git(git: str, root: Path, *args: str) -> bytes:
    # Trusted input: git from PATH, the revision the developer or CI named.
    result = subprocess.run(  # noqa: S603
        [git, "-C", str(root), *args], capture_output=True, timeout=_GIT_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise CodegenError(f"git {' '.join(args)} failed: {message}")
    return result.stdout


def _diff(path: str, old: bytes, new: bytes) -> str:
    try:
        old_lines = old.decode().splitlines(keepends=True)
        new_lines = new.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return "(binary content differs)\n"
    lines = list(difflib.unified_diff(old_lines, new_lines, f"a/{path}", f"b/{path}"))
    if len(lines) > _DIFF_LINES:
        lines = [*lines[:_DIFF_LINES], f"... ({len(lines) - _DIFF_LINES} more diff lines)\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _path(root: Path, relative: str) -> Path:
    return root.joinpath(*relative.split("/"))


def _write(target: Path, content: bytes) -> None:
    # Write then rename, so an interrupted run never leaves a half-written file
    # that the next run would read as committed.
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, content, mode=0o644)


def _prune_proto_dirs(root: Path) -> None:
    """Remove package directories left empty (but for bytecode) under ``mainstay/``."""
    proto_tree = _path(root, _PROTO_TREE)
    if not proto_tree.is_dir():
        return
    directories = sorted(
        (path for path in proto_tree.rglob("*") if path.is_dir() and path.name != "__pycache__"),
        key=lambda path: len(path.parts),
        reverse=True,
    )
    for directory in directories:
        if all(child.name == "__pycache__" for child in directory.iterdir()):
            shutil.rmtree(directory)
