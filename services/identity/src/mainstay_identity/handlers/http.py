"""The identity HTTP API: the OAuth2 token endpoint, the JWKS, and principal administration.

``POST /oauth/token`` speaks RFC 6749: form-encoded requests, client
authentication by ``client_id``/``client_secret`` in the form or HTTP Basic,
and errors as ``{"error", "error_description"}`` with 400 or 401 (429 after
too many failed attempts). ``GET /.well-known/jwks.json`` needs no token.
Administration needs ``identity:admin`` and stays inside the caller's tenant
unless the caller holds ``*``.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mainstay_common.auth import Principal, require_principal
from mainstay_common.errors import NotFound, PermissionDenied
from mainstay_identity.service import (
    EXCHANGE_GRANT,
    IdentityService,
    OAuthError,
    TokenAnswer,
    check_name,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ADMIN_SCOPE", "install_routes"]

ADMIN_SCOPE = "identity:admin"
Caller = Annotated[Principal, Depends(require_principal)]
Tenant = Annotated[str, Path(min_length=1, max_length=128)]
Name = Annotated[str, Path(min_length=1, max_length=128)]
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class PrincipalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["agent", "user", "service"]
    owner: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=4000)
    scopes: list[str] = Field(default_factory=list, max_length=200)
    disabled: bool = False
    email: str = Field(
        default="",
        max_length=320,
        pattern=r"^([^@\s<>]+@[^@\s<>]+\.[^@\s<>]+)?$",
        description="Where this principal's mail is also sent by email (and whom an inbound"
        " email is from); unique within the tenant.",
    )


def _oauth_error(error: OAuthError, *, basic: bool = False) -> JSONResponse:
    headers = dict(_NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = (
            'Basic realm="mainstay"' if basic else 'Bearer realm="mainstay"'
        )
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(
        {"error": error.error, "error_description": error.description},
        status_code=error.status,
        headers=headers,
    )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401)
    return unquote(client_id), unquote(secret)  # RFC 6749 §2.3.1 form-encodes both


def _admin(principal: Principal, tenant: str) -> None:
    principal.require_scope(ADMIN_SCOPE)
    principal.require_tenant(tenant, doing="administering another tenant")


def _principal_json(record: Any) -> dict[str, Any]:
    return {
        "tenant": record.tenant,
        "name": record.name,
        "client_id": f"{record.tenant}/{record.name}",
        "kind": record.kind,
        "owner": record.owner,
        "description": record.description,
        "scopes": list(record.scopes),
        "has_secret": record.has_secret,
        "disabled": record.disabled,
        "email": record.email,
    }


class RevocationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jti: str = Field(default="", max_length=200)
    client: str = Field(default="", max_length=128, description="A principal's name.")
    reason: str = Field(default="", max_length=1000)


class TokenForm(BaseModel):
    """The token request's form fields (RFC 6749 §4.4, RFC 8693 §2.1); others are ignored."""

    model_config = ConfigDict(extra="ignore")

    grant_type: str = ""
    client_id: str = Field(default="", max_length=300)
    client_secret: str = Field(default="", max_length=1000, repr=False)
    scope: str | None = Field(default=None, max_length=4000)
    subject_token: str = Field(default="", max_length=8192, repr=False)
    subject_token_type: str = Field(default="", max_length=200)
    actor_token: str = Field(default="", max_length=8192, repr=False)


async def _grant(service: IdentityService, form: TokenForm) -> TokenAnswer:
    if not form.grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if form.grant_type not in {"client_credentials", EXCHANGE_GRANT}:
        raise OAuthError(
            "unsupported_grant_type", f"grant_type {form.grant_type[:60]!r} is not supported"
        )
    if not form.client_id or not form.client_secret:
        raise OAuthError("invalid_client", "client_id and client_secret are required", status=401)
    if form.grant_type == "client_credentials":
        return await service.client_credentials(form.client_id, form.client_secret, form.scope)
    if form.actor_token:
        raise OAuthError(
            "invalid_request",
            "actor_token is not accepted: the acting agent authenticates as the client",
        )
    if not form.subject_token or not form.subject_token_type:
        raise OAuthError("invalid_request", "subject_token and subject_token_type are required")
    return await service.exchange(
        form.client_id,
        form.client_secret,
        subject_token=form.subject_token,
        subject_token_type=form.subject_token_type,
        scope=form.scope,
    )


def install_routes(app: FastAPI, service: IdentityService) -> None:
    @app.post("/oauth/token")
    async def token(request: Request, form: Annotated[TokenForm, Form()]) -> JSONResponse:
        basic = False
        try:
            credentials = _basic_credentials(request)
            if credentials is not None:
                basic = True
                form = form.model_copy(
                    update={"client_id": credentials[0], "client_secret": credentials[1]}
                )
            answer = await _grant(service, form)
        except OAuthError as error:
            return _oauth_error(error, basic=basic)
        body: dict[str, Any] = {
            "access_token": answer.access_token,
            "token_type": answer.token_type,
            "expires_in": answer.expires_in,
            "scope": answer.scope,
        }
        if answer.issued_token_type:
            body["issued_token_type"] = answer.issued_token_type
        return JSONResponse(body, headers=_NO_STORE)

    @app.get("/.well-known/jwks.json")
    async def jwks() -> JSONResponse:
        document = await service.keys.jwks()
        return JSONResponse(document, headers={"Cache-Control": "max-age=60"})

    router = APIRouter(prefix="/v1")

    @router.put("/tenants/{tenant}/principals/{name}")
    async def put_principal(
        tenant: Tenant, name: Name, body: PrincipalBody, caller: Caller
    ) -> JSONResponse:
        _admin(caller, tenant)
        check_name("tenant", tenant)
        check_name("name", name)
        record, created = await service.principals.put(
            tenant=tenant,
            name=name,
            kind=body.kind,
            owner=body.owner,
            description=body.description,
            scopes=body.scopes,
            disabled=body.disabled,
            email=body.email,
        )
        return JSONResponse(_principal_json(record), status_code=201 if created else 200)

    @router.get("/tenants/{tenant}/principals/{name}")
    async def get_principal(tenant: Tenant, name: Name, caller: Caller) -> JSONResponse:
        _admin(caller, tenant)
        record = await service.principals.get(tenant, name)
        if record is None:
            raise NotFound(f"tenant '{tenant}' has no principal '{name}'")
        return JSONResponse(_principal_json(record))

    @router.post("/tenants/{tenant}/principals/{name}/secret")
    async def new_secret(tenant: Tenant, name: Name, caller: Caller) -> JSONResponse:
        """A new client secret, shown once; the previous one stops working."""
        _admin(caller, tenant)
        secret = await service.principals.new_secret(tenant, name)
        await service.log.record(
            tenant=tenant, principal=name, event="secret-issued", detail=f"by {caller.subject}"
        )
        return JSONResponse(
            {"client_id": f"{tenant}/{name}", "client_secret": secret}, headers=_NO_STORE
        )

    @router.post("/keys/rotate")
    async def rotate(caller: Caller) -> dict[str, str]:
        if not caller.has_scope("*"):
            raise PermissionDenied("rotating the signing key needs the '*' scope")
        old, new = await service.rotate_keys(by=caller.subject, tenant=caller.tenant)
        return {"retired": old, "active": new}

    @router.get("/tenants/{tenant}/credential-events")
    async def credential_events(tenant: Tenant, caller: Caller) -> dict[str, Any]:
        _admin(caller, tenant)
        return {"events": await service.log.list(tenant=tenant)}

    @router.post("/tenants/{tenant}/revocations", status_code=201)
    async def revoke(tenant: Tenant, body: RevocationBody, caller: Caller) -> dict[str, Any]:
        _admin(caller, tenant)
        revocation = await service.revoke(
            tenant=tenant, jti=body.jti, client=body.client, reason=body.reason, by=caller.subject
        )
        return {"id": revocation}

    @router.get("/tenants/{tenant}/agents/{name}/card")
    async def agent_card(tenant: Tenant, name: Name, request: Request) -> JSONResponse:
        """The agent's signed card (public, like any A2A card): who it is, what it may do,
        where to get and check its tokens."""
        base_url = str(request.base_url).rstrip("/")
        card = await service.agent_card(tenant, name, base_url=base_url)
        return JSONResponse(card, headers={"Cache-Control": "max-age=60"})

    @router.get("/revocations")
    async def revocations(after: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """The feed verifiers read (``MAINSTAY_AUTH_REVOCATIONS_URL``): no token needed, and
        no names: jtis are random, clients appear as digests."""
        return {"revocations": await service.revocations.feed(after)}

    app.include_router(router)
