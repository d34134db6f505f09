"""Readiness: may this instance take traffic right now?

Kubernetes polls ``/readyz`` often and routes traffic only to ready pods, so
every check runs concurrently under its own timeout: one hung dependency must
make the probe fail fast, not hang it. A check passes by returning anything
but ``False``; it fails by raising (the reason is the exception) or returning
``False``. Liveness (``/healthz``) deliberately checks nothing: a dependency
outage should take a pod out of rotation, not get it restarted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from mainstay_common.errors import MainstayError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CheckResult", "ReadinessCheck", "ReadinessProbe", "as_check", "run_checks"]

_REASON_LIMIT = 300


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """A named async check; ``timeout_s`` overrides the app-wide default."""

    name: str
    check: Callable[[], Awaitable[object]]
    timeout_s: float | None = None


ReadinessProbe: TypeAlias = ReadinessCheck | Callable[[], Awaitable[object]]
"""What ``create_http_app(readiness=...)`` accepts: a bare async callable is named after itself."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    reason: str | None  # None: the check passed

    @property
    def ok(self) -> bool:
        return self.reason is None


def as_check(probe: ReadinessProbe) -> ReadinessCheck:
    """Normalise a probe to a :class:`ReadinessCheck`."""
    if isinstance(probe, ReadinessCheck):
        return probe
    name = getattr(probe, "__name__", None) or type(probe).__name__
    return ReadinessCheck(name=name, check=probe)


def _reason(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, MainstayError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _REASON_LIMIT else text[:_REASON_LIMIT] + "..."


async def _run(check: ReadinessCheck, default_timeout_s: float) -> CheckResult:
    timeout = check.timeout_s if check.timeout_s is not None else default_timeout_s
    try:
        async with asyncio.timeout(timeout):
            outcome = await check.check()
    except TimeoutError:
        return CheckResult(check.name, f"timed out after {timeout:g}s")
    except Exception as exc:  # noqa: BLE001  # any failure of a check is its reason to report
        return CheckResult(check.name, _reason(exc))
    if outcome is False:
        return CheckResult(check.name, "check returned false")
    return CheckResult(check.name, None)


async def run_checks(
    checks: Sequence[ReadinessCheck], *, default_timeout_s: float
) -> list[CheckResult]:
    """Run every check concurrently; results come back in the order of ``checks``."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_run(check, default_timeout_s)) for check in checks]
    return [task.result() for task in tasks]
