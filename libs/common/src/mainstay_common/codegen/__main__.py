"""``python -m mainstay_common.codegen gen|check``: exit 0 when all is well, 1 otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mainstay_common.codegen._errors import CodegenError
from mainstay_common.codegen._pipeline import Drift, Report, check, find_root, generate

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mainstay_common.codegen",
        description="Generate event schemas, topics.yaml, protobuf code and AsyncAPI documents.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    gen_parser = commands.add_parser("gen", help="regenerate every artefact in place")
    gen_parser.add_argument(
        "--allow-breaking",
        action="store_true",
        help="write event schemas even if they break compatibility (only for unused topics)",
    )
    check_parser = commands.add_parser(
        "check", help="fail if a committed artefact is stale or an event schema breaks"
    )
    check_parser.add_argument(
        "--base",
        metavar="GIT_REV",
        help="judge compatibility against schemas/events at this revision (CI: the merge base)",
    )
    for sub in (gen_parser, check_parser):
        sub.add_argument("--root", type=Path, help="workspace root (default: found from the cwd)")
    args = parser.parse_args(argv)

    try:
        root = (args.root or find_root(Path.cwd())).resolve()
        if args.command == "gen":
            report = generate(root, allow_breaking=args.allow_breaking)
            _echo(_describe_gen(report))
        else:
            report = check(root, base=args.base)
            _echo(_describe_check(report))
    except CodegenError as exc:
        _echo(f"error: {exc}\n", error=True)
        return 1
    return 0 if report.ok else 1


def _describe_gen(report: Report) -> str:
    if report.breaking or report.problems:
        return (
            _describe_breaking(report)
            + "Nothing was written. Publish the change as a new topic version, or pass "
            "--allow-breaking if nobody produces or consumes the topic yet.\n"
        )
    lines = [f"wrote    {path}\n" for path in report.written]
    lines += [f"removed  {path}\n" for path in report.removed]
    return "".join(lines) or "generated files are up to date\n"


def _describe_check(report: Report) -> str:
    text = ""
    if report.stale:
        text += "Generated files are stale; run `./dev gen` and commit the result:\n"
        notes = {"missing": "  (not in the tree)", "extra": "  (nothing generates it any more)"}
        text += "".join(
            f"  {drift.status:<8} {drift.path}{notes.get(drift.status, '')}{_sections(drift)}\n"
            for drift in report.stale
        )
        text += "".join(drift.diff for drift in report.stale if drift.diff)
    text += _describe_breaking(report)
    if report.lint is not None and not report.lint.ok:
        text += f"buf lint failed on schemas/proto:\n{report.lint.output}\n"
    return text or "generated files are current\n"


def _sections(drift: Drift) -> str:
    if not drift.sections:
        return ""
    return f"  (generated section{'s' if len(drift.sections) > 1 else ''}: {', '.join(drift.sections)})"


def _describe_breaking(report: Report) -> str:
    text = "".join(f"{problem}\n" for problem in report.problems)
    if report.breaking:
        text += "Breaking changes to event schemas (a breaking change needs a new topic vN+1):\n"
        text += "".join(f"  {change}\n" for change in report.breaking)
    return text


def _echo(text: str, *, error: bool = False) -> None:
    stream = sys.stderr if error else sys.stdout
    stream.write(text)
    stream.flush()


if __name__ == "__main__":
    sys.exit(main())
