"""The mail HTTP API: send as the caller, read the caller's own inbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from mainstay_common.auth import Principal, require_principal
from mainstay_contracts.identity import MailDraft  # noqa: TC001 - FastAPI reads it at runtime

if TYPE_CHECKING:
    from mainstay_identity.mail import MailService

__all__ = ["create_mail_router"]

Caller = Annotated[Principal, Depends(require_principal)]


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
    async def read_message(
        message_id: Annotated[str, Path(min_length=1, max_length=200)], caller: Caller
    ) -> dict[str, Any]:
        """The message, marked read."""
        return await mail.read(caller, message_id)

    return router
