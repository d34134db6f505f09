"""The double-entry core: accounts, transfers, and holds that are captured in parts.

Modelled on TigerBeetle. An account keeps four running balances (debits and
credits, each pending and posted) and may carry a limit flag checked inside
the transaction that would break it:

* ``debits_must_not_exceed_credits``: debits (pending + posted) never exceed
  posted credits (a budget that can only spend what it was given);
* ``credits_must_not_exceed_debits``: the mirror image.

A transfer moves an integer ``amount`` of micro-units between two accounts of
one tenant and one currency, and is immutable. Its ``id`` is its idempotency
key: the same id again returns the first result, and the same id with other
fields is refused. Kinds:

* ``posted``: the money moves now;
* ``pending``: it is reserved (a hold) until ``timeout_at``: debits_pending
  of the debit account and credits_pending of the credit account grow;
* ``capture``: part of a pending transfer is posted (pending -> posted on
  both accounts); a hold may be captured many times, never beyond what
  remains;
* ``void`` / ``expire``: what remains of a pending transfer is released.
  A pending transfer is resolved at most once (a unique index says so too).

The service posts usage with the schema's ``post_usage`` function, which
applies :func:`capture`'s rules in one round trip; :func:`capture` stays the
reference those rules are tested against (``tests/test_engine_stateful.py``).

Every function here runs inside a transaction the caller holds, and locks
the accounts it touches in id order, so concurrent postings serialise per
account and never deadlock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from mainstay_common.errors import AlreadyExists, InvalidArgument, NotFound, RuleViolation

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import asyncpg

    from mainstay_common.db import Connection

__all__ = [
    "CREDITS_MUST_NOT_EXCEED_DEBITS",
    "DEBITS_MUST_NOT_EXCEED_CREDITS",
    "MAX_AMOUNT",
    "Account",
    "CurrencyMismatch",
    "LedgerRejection",
    "Posting",
    "Transfer",
    "TransferConflict",
    "UnknownAccount",
    "capture",
    "check_amount",
    "ensure_accounts",
    "get_account",
    "open_account",
    "post",
    "resolve",
]

DEBITS_MUST_NOT_EXCEED_CREDITS = "debits_must_not_exceed_credits"
CREDITS_MUST_NOT_EXCEED_DEBITS = "credits_must_not_exceed_debits"
_FLAGS = frozenset({DEBITS_MUST_NOT_EXCEED_CREDITS, CREDITS_MUST_NOT_EXCEED_DEBITS})
MAX_AMOUNT = 2**63 - 1
TransferKind = Literal["posted", "pending", "capture", "void", "expire"]


class LedgerRejection(RuleViolation):
    """A posting the ledger's rules refuse; ``reason`` names the rule (a stable code)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnknownAccount(NotFound):
    pass


class CurrencyMismatch(InvalidArgument):
    pass


class TransferConflict(AlreadyExists):
    """A transfer id already used for a different transfer."""


@dataclass(frozen=True)
class Account:
    id: str
    tenant: str
    kind: str
    currency: str
    flags: tuple[str, ...]
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    @classmethod
    def of(cls, row: asyncpg.Record) -> Account:
        fields = {name: row[name] for name in cls.__dataclass_fields__}
        return cls(**fields | {"flags": tuple(fields["flags"])})


@dataclass(frozen=True)
class Transfer:
    id: str
    tenant: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    code: str
    kind: TransferKind
    pending_id: str | None
    remaining: int | None
    state: str | None
    timeout_at: datetime | None
    task_id: str
    step: int | None
    detail: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> Transfer:
        fields = {name: row[name] for name in cls.__dataclass_fields__}
        if fields["detail"] is not None:
            fields["detail"] = json.loads(fields["detail"])
        return cls(**fields)


@dataclass(frozen=True)
class Posting:
    """A transfer, and whether it was applied before (a repeat of its id)."""

    transfer: Transfer
    replayed: bool


def check_amount(amount: object, *, field: str = "amount") -> int:
    """A positive integer of micro-units, or a clear error naming ``field``."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidArgument(f"{field}: must be an integer number of micro-units, got {amount!r}")
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidArgument(f"{field}: must be between 1 and {MAX_AMOUNT}, got {amount}")
    return amount


async def open_account(
    conn: Connection,
    *,
    id: str,
    tenant: str,
    kind: str,
    currency: str,
    flags: Iterable[str] = (),
) -> Account:
    """Create the account, or return it when it exists with the same definition."""
    wanted = tuple(sorted(set(flags)))
    unknown = set(wanted) - _FLAGS
    if unknown:
        raise InvalidArgument(f"flags: unknown {', '.join(sorted(unknown))}")
    if set(wanted) == _FLAGS:
        raise InvalidArgument("flags: an account cannot limit both debits and credits")
    await conn.execute(
        "INSERT INTO accounts (id, tenant, kind, currency, flags) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (id) DO NOTHING",
        id,
        tenant,
        kind,
        currency,
        list(wanted),
    )
    account = await get_account(conn, id)
    assert account is not None
    if (account.tenant, account.kind, account.currency, tuple(sorted(account.flags))) != (
        tenant,
        kind,
        currency,
        wanted,
    ):
        raise AlreadyExists(f"account '{id}' exists with another definition")
    return account


async def ensure_accounts(
    conn: Connection, accounts: Iterable[tuple[str, str, str, str, tuple[str, ...]]]
) -> None:
    """Create each ``(id, tenant, kind, currency, flags)`` that does not exist yet, in one
    statement; for ids the caller derives from those same fields, so an existing one matches."""
    rows = list(accounts)
    await conn.execute(
        "INSERT INTO accounts (id, tenant, kind, currency, flags)"
        " SELECT a.id, a.tenant, a.kind, a.currency, string_to_array(a.flags, ',')"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])"
        " AS a(id, tenant, kind, currency, flags)"
        " ON CONFLICT (id) DO NOTHING",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [",".join(r[4]) for r in rows],
    )


async def get_account(conn: Connection, account_id: str) -> Account | None:
    row = await conn.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
    return Account.of(row) if row is not None else None


async def _lock(conn: Connection, tenant: str, *ids: str) -> dict[str, Account]:
    rows = await conn.fetch(
        "SELECT * FROM accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", list(ids)
    )
    found = {r["id"]: Account.of(r) for r in rows if r["tenant"] == tenant}
    missing = [i for i in dict.fromkeys(ids) if i not in found]
    if missing:
        raise UnknownAccount(f"no such account in tenant '{tenant}': {', '.join(missing)}")
    return found


async def _repeat(
    conn: Connection, transfer_id: str, expected: Mapping[str, Any]
) -> Posting | None:
    """The first result of ``transfer_id``, if it was applied; a different one is refused."""
    row = await conn.fetchrow("SELECT * FROM transfers WHERE id = $1", transfer_id)
    if row is None:
        return None
    first = Transfer.of(row)
    for field, value in expected.items():
        if value is not None and getattr(first, field) != value:
            raise TransferConflict(
                f"transfer '{transfer_id}' was applied with another {field}"
                f" ({getattr(first, field)!r}, not {value!r})"
            )
    return Posting(first, replayed=True)


def _check_limits(account: Account, *, debits: int = 0, credits: int = 0) -> None:
    """Refuse adding ``debits``/``credits`` (pending or posted) if a flag would break."""
    total_debits = account.debits_pending + account.debits_posted + debits
    total_credits = account.credits_pending + account.credits_posted + credits
    if DEBITS_MUST_NOT_EXCEED_CREDITS in account.flags and total_debits > account.credits_posted:
        raise LedgerRejection(
            "exceeds_credits",
            f"account '{account.id}' would have {total_debits} in debits against"
            f" {account.credits_posted} in posted credits",
        )
    if CREDITS_MUST_NOT_EXCEED_DEBITS in account.flags and total_credits > account.debits_posted:
        raise LedgerRejection(
            "exceeds_debits",
            f"account '{account.id}' would have {total_credits} in credits against"
            f" {account.debits_posted} in posted debits",
        )


async def _add(
    conn: Connection,
    account_id: str,
    *,
    debits_pending: int = 0,
    debits_posted: int = 0,
    credits_pending: int = 0,
    credits_posted: int = 0,
) -> None:
    await conn.execute(
        "UPDATE accounts SET debits_pending = debits_pending + $2,"
        " debits_posted = debits_posted + $3, credits_pending = credits_pending + $4,"
        " credits_posted = credits_posted + $5 WHERE id = $1",
        account_id,
        debits_pending,
        debits_posted,
        credits_pending,
        credits_posted,
    )


async def _insert(conn: Connection, **fields: Any) -> Transfer:
    if fields.get("detail") is not None:
        fields["detail"] = json.dumps(fields["detail"])
    columns = ", ".join(fields)
    placeholders = ", ".join(f"${i}" for i in range(1, len(fields) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO transfers ({columns}) VALUES ({placeholders}) RETURNING *",  # noqa: S608 - column names are ours
        *fields.values(),
    )
    assert row is not None
    return Transfer.of(row)


async def post(
    conn: Connection,
    *,
    id: str,
    tenant: str,
    debit: str,
    credit: str,
    amount: int,
    code: str,
    pending: bool = False,
    timeout_at: datetime | None = None,
    task_id: str = "",
    step: int | None = None,
    detail: dict[str, Any] | None = None,
) -> Posting:
    """Move ``amount`` from ``debit`` to ``credit`` now, or reserve it (``pending``)."""
    check_amount(amount)
    kind: TransferKind = "pending" if pending else "posted"
    if pending and timeout_at is None:
        raise InvalidArgument("timeout_at: a pending transfer needs one")
    if debit == credit:
        raise InvalidArgument("credit: must differ from the debit account")
    repeat = await _repeat(
        conn,
        id,
        {"debit_account": debit, "credit_account": credit, "amount": amount, "kind": kind},
    )
    if repeat is not None:
        return repeat
    accounts = await _lock(conn, tenant, debit, credit)
    debit_account, credit_account = accounts[debit], accounts[credit]
    if debit_account.currency != credit_account.currency:
        raise CurrencyMismatch(
            f"currency: account '{debit}' is in {debit_account.currency},"
            f" account '{credit}' in {credit_account.currency}"
        )
    _check_limits(debit_account, debits=amount)
    _check_limits(credit_account, credits=amount)
    if pending:
        await _add(conn, debit, debits_pending=amount)
        await _add(conn, credit, credits_pending=amount)
    else:
        await _add(conn, debit, debits_posted=amount)
        await _add(conn, credit, credits_posted=amount)
    transfer = await _insert(
        conn,
        id=id,
        tenant=tenant,
        debit_account=debit,
        credit_account=credit,
        amount=amount,
        currency=debit_account.currency,
        code=code,
        kind=kind,
        remaining=amount if pending else None,
        state="open" if pending else None,
        timeout_at=timeout_at if pending else None,
        task_id=task_id,
        step=step,
        detail=detail,
    )
    return Posting(transfer, replayed=False)


async def _open_pending(conn: Connection, pending_id: str, tenant: str) -> Transfer:
    """The pending transfer, locked; refused unless it is still open."""
    row = await conn.fetchrow(
        "SELECT * FROM transfers WHERE id = $1 AND tenant = $2 FOR UPDATE", pending_id, tenant
    )
    if row is None or row["kind"] != "pending":
        raise UnknownAccount(f"pending_id: no hold '{pending_id}' in tenant '{tenant}'")
    hold = Transfer.of(row)
    if hold.state != "open":
        raise LedgerRejection("pending_resolved", f"hold '{pending_id}' was already {hold.state}")
    return hold


async def capture(
    conn: Connection,
    *,
    id: str,
    tenant: str,
    pending_id: str,
    amount: int,
    code: str,
    step: int | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Posting:
    """Post ``amount`` of an open hold; more than it has left is ``exceeds_pending``."""
    check_amount(amount)
    repeat = await _repeat(
        conn, id, {"pending_id": pending_id, "amount": amount, "kind": "capture"}
    )
    if repeat is not None:
        return repeat
    hold = await _open_pending(conn, pending_id, tenant)
    assert hold.remaining is not None
    if hold.timeout_at is not None and hold.timeout_at <= (now or datetime.now(UTC)):
        raise LedgerRejection("pending_expired", f"hold '{pending_id}' timed out")
    if amount > hold.remaining:
        raise LedgerRejection(
            "exceeds_pending",
            f"hold '{pending_id}' has {hold.remaining} left, {amount} asked",
        )
    await _lock(conn, tenant, hold.debit_account, hold.credit_account)
    await _add(conn, hold.debit_account, debits_pending=-amount, debits_posted=amount)
    await _add(conn, hold.credit_account, credits_pending=-amount, credits_posted=amount)
    await conn.execute(
        "UPDATE transfers SET remaining = remaining - $2 WHERE id = $1", pending_id, amount
    )
    transfer = await _insert(
        conn,
        id=id,
        tenant=tenant,
        debit_account=hold.debit_account,
        credit_account=hold.credit_account,
        amount=amount,
        currency=hold.currency,
        code=code,
        kind="capture",
        pending_id=pending_id,
        task_id=hold.task_id,
        step=step,
        detail=detail,
    )
    return Posting(transfer, replayed=False)


async def resolve(
    conn: Connection,
    *,
    id: str,
    tenant: str,
    pending_id: str,
    kind: Literal["void", "expire"],
    code: str,
) -> Posting:
    """Release what is left of an open hold, once (``void`` by request, ``expire`` at timeout)."""
    repeat = await _repeat(conn, id, {"pending_id": pending_id, "kind": kind})
    if repeat is not None:
        return repeat
    hold = await _open_pending(conn, pending_id, tenant)
    assert hold.remaining is not None
    await _lock(conn, tenant, hold.debit_account, hold.credit_account)
    await _add(conn, hold.debit_account, debits_pending=-hold.remaining)
    await _add(conn, hold.credit_account, credits_pending=-hold.remaining)
    await conn.execute(
        "UPDATE transfers SET remaining = 0, state = $2 WHERE id = $1",
        pending_id,
        "voided" if kind == "void" else "expired",
    )
    transfer = await _insert(
        conn,
        id=id,
        tenant=tenant,
        debit_account=hold.debit_account,
        credit_account=hold.credit_account,
        amount=hold.remaining,
        currency=hold.currency,
        code=code,
        kind=kind,
        pending_id=pending_id,
        task_id=hold.task_id,
    )
    return Posting(transfer, replayed=False)
