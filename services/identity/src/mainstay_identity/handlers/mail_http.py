"""The mail HTTP API: send as the caller, read the caller's own inbox, answer approvals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mainstay_common.auth import Principal, require_principal
from mainstay_common.errors import InvalidArgument
from mainstay_contracts.identity import OPTIONAL_ID_PATTERN, ApprovalAnswer, MailDraft

if TYPE_CHECKING:
    from mainstay_identity.mail import MailService

__all__ = ["create_mail_router"]

Caller = Annotated[Principal, Depends(require_principal)]
MessageId = Annotated[str, Path(min_length=1, max_length=200)]


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: str = Field(min_length=1, max_length=40, description="One of the options.")
    reason: str = Field(default="", max_length=4000)
    message_id: str = Field(
        default="",
        max_length=200,
        pattern=OPTIONAL_ID_PATTERN,
        description="Idempotency key of the reply message (optional).",
    )


def create_mail_router(mail: MailService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/mail", status_code=201)
    async def send_mail(draft: MailDraft, caller: Caller) -> dict[str, Any]:
        """Send as the caller, to principals of the caller's tenant."""
        return await mail.send(caller, draft)

    @router.get("/inbox")
    async def inbox(
        caller: Caller,
        unread: bool = False,
        label: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        """The caller's own inbox, newest first."""
        messages = await mail.inbox(caller, unread_only=unread, label=label, limit=limit)
        return {"messages": messages}

    @router.post("/inbox/{message_id}/read")
    async def read_message(message_id: MessageId, caller: Caller) -> dict[str, Any]:
        """The message, marked read."""
        return await mail.read(caller, message_id)

    @router.get("/approvals")
    async def approvals(
        caller: Caller,
        status: Literal["pending", "decided", "expired"] | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        """Approvals the caller asked for or may answer."""
        return {"approvals": await mail.approvals(caller, status=status, limit=limit)}

    @router.get("/approvals/{approval_id}")
    async def approval(approval_id: MessageId, caller: Caller) -> dict[str, Any]:
        return await mail.approval(caller, approval_id)

    @router.post("/approvals/{approval_id}/decision", status_code=201)
    async def decide(approval_id: MessageId, body: DecisionBody, caller: Caller) -> dict[str, Any]:
        """Answer an approval as one of its human recipients: a reply in its thread to the
        requester, and an ``approval.decided`` event."""
        try:
            answer = ApprovalAnswer.model_validate(
                {"approval_id": approval_id, "decision": body.decision, "reason": body.reason}
            )
        except ValidationError as exc:
            # The body and the path are checked loosely above; the answer's own rules
            # (an option's spelling, an id's characters) are the ones that decide.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise InvalidArgument(f"invalid decision: {problems}") from None
        draft = MailDraft(kind="approval-reply", answer=answer, message_id=body.message_id)
        reply = await mail.send(caller, draft)
        return {"approval": await mail.approval(caller, approval_id), "message": reply}

    return router
