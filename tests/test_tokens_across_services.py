"""Tokens the identity service issues, checked by every service: memory over gRPC, the
tools gateway over HTTP, identity itself. A bad token is refused everywhere with
401 / UNAUTHENTICATED: wrong audience, expired, revoked, badly signed, or
replayed from another deployment; a token of one tenant never reads another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.auth import TokenSigner
from mainstay_common.grpc import create_channel
from mainstay_common.settings import AuthSettings, KafkaSettings, PostgresSettings
from mainstay_common.testing import temporary_database
from mainstay_identity.app import IdentityApp
from mainstay_identity.settings import IdentitySettings
from mainstay_memory.app import MemoryApp
from mainstay_memory.settings import MemorySettings
from mainstay_tools_gateway.app import ToolsGatewayApp
from mainstay_tools_gateway.settings import ToolsGatewaySettings
from mainstay_tools_gateway.store.vault import Vault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = pytest.mark.real


@dataclass
class Mesh:
    identity: IdentityApp
    http: httpx.AsyncClient
    """The identity service's HTTP API."""
    tools: httpx.AsyncClient
    """The tools gateway's HTTP API."""
    memory: memory_pb2_grpc.MemoryServiceStub
    operator: TokenSigner

    def admin(self, tenant: str) -> dict[str, str]:
        token = self.operator.mint(subject="operator", tenant=tenant, scopes=["identity:admin"])
        return {"Authorization": f"Bearer {token}"}

    async def client(
        self, tenant: str, name: str, scopes: list[str]
    ) -> Callable[[], Awaitable[str]]:
        """Register an agent; the function returns a fresh token of it."""
        await self.http.put(
            f"/v1/tenants/{tenant}/principals/{name}",
            json={"kind": "agent", "scopes": scopes},
            headers=self.admin(tenant),
        )
        secret = (
            await self.http.post(
                f"/v1/tenants/{tenant}/principals/{name}/secret", headers=self.admin(tenant)
            )
        ).json()["client_secret"]

        async def token() -> str:
            answer = await self.http.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": f"{tenant}/{name}",
                    "client_secret": secret,
                },
            )
            assert answer.status_code == 200, answer.text
            return str(answer.json()["access_token"])

        return token

    async def recall(self, bearer: str, tenant: str, agent: str = "scout") -> pb.RecallResponse:
        return await self.memory.Recall(
            pb.RecallRequest(scope=pb.Scope(tenant=tenant, agent_id=agent), query="anything"),
            metadata=[("authorization", f"Bearer {bearer}")],
        )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    home = tmp_path_factory.mktemp("mesh")
    operator = TokenSigner.generate()  # signs the operators' admin tokens
    (home / "jwks.json").write_text(json.dumps(operator.jwks()))
    kafka = KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    async with contextlib.AsyncExitStack() as stack:
        identity_dsn = await stack.enter_async_context(
            temporary_database(postgres_dsn, prefix="identity_test")
        )
        identity_settings = IdentitySettings(
            http_port=0,
            shutdown_grace_s=2.0,
            kafka=kafka,
            postgres=PostgresSettings(dsn=identity_dsn),
            auth=AuthSettings(jwks_file=str(home / "jwks.json")),
            key_secrets=[Fernet.generate_key().decode()],
        )
        identity = await stack.enter_async_context(IdentityApp(identity_settings))
        base = f"http://127.0.0.1:{identity.http_port}"
        auth = AuthSettings(
            jwks_url=f"{base}/.well-known/jwks.json",
            jwks_file=None,
            revocations_url=f"{base}/v1/revocations",
            revocations_poll_s=0.2,
        )
        common: dict[str, Any] = {
            "http_port": 0,
            "shutdown_grace_s": 2.0,
            "kafka": kafka,
            "postgres": PostgresSettings(dsn=postgres_dsn),
            "auth": auth,
        }
        memory = await stack.enter_async_context(MemoryApp(MemorySettings(grpc_port=0, **common)))
        tools = await stack.enter_async_context(
            ToolsGatewayApp(ToolsGatewaySettings(vault_keys=[Vault.generate_key()], **common))
        )
        channel = create_channel(f"127.0.0.1:{memory.grpc_port}")
        stack.push_async_callback(channel.close)
        yield Mesh(
            identity=identity,
            http=await stack.enter_async_context(httpx.AsyncClient(base_url=base)),
            tools=await stack.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{tools.http_port}")
            ),
            memory=memory_pb2_grpc.MemoryServiceStub(channel),
            operator=operator,
        )


async def test_a_revoked_token_and_a_revoked_client_are_refused_by_memory(mesh: Mesh) -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    http, admin = mesh.http, mesh.admin(tenant)
    token = await mesh.client(tenant, "scout", ["memory:read:scout"])
    first, second = await token(), await token()
    await mesh.recall(first, tenant)  # a token identity issued works in memory
    first_jti = _jti(first)
    revoked = await http.post(
        f"/v1/tenants/{tenant}/revocations",
        json={"jti": first_jti, "reason": "leaked in a log"},
        headers=admin,
    )
    assert revoked.status_code == 201, revoked.text
    await asyncio.sleep(0.3)  # one poll of the feed
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.recall(first, tenant)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "token has been revoked"
    await mesh.recall(second, tenant)  # only that token

    await http.post(
        f"/v1/tenants/{tenant}/revocations",
        json={"client": "scout", "reason": "agent retired"},
        headers=admin,
    )
    await asyncio.sleep(0.3)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.recall(second, tenant)
    assert refused.value.details() == "token has been revoked"
    # The client is disabled too: no new tokens.
    with pytest.raises(AssertionError, match="invalid_client"):
        await token()
    feed = (await http.get("/v1/revocations")).json()["revocations"]
    assert any(e.get("jti") == first_jti for e in feed)
    assert "scout" not in json.dumps(feed)  # clients only as digests


async def _bad_tokens(mesh: Mesh, tenant: str, good: str) -> dict[str, str]:
    """Tokens every service must refuse, by what is wrong with them."""
    signer = await mesh.identity.service.keys.signer()  # type: ignore[union-attr]
    claims = jwt.decode(good, options={"verify_signature": False})
    now = int(datetime.now(UTC).timestamp())
    hour = int(timedelta(hours=1).total_seconds())
    forger = TokenSigner.from_pem(
        TokenSigner.generate().private_pem(),
        kid=signer.kid,
        issuer=signer.issuer,
        audience=signer.audience,
    )
    revoked = await mesh.client(tenant, "leaky", ["memory:read:scout", "tools:call:*"])
    leaked = await revoked()
    answer = await mesh.http.post(
        f"/v1/tenants/{tenant}/revocations",
        json={"jti": _jti(leaked), "reason": "leaked"},
        headers=mesh.admin(tenant),
    )
    assert answer.status_code == 201
    await asyncio.sleep(0.3)  # one poll of the feed
    return {
        "wrong audience": signer.sign({**claims, "aud": "billing-at-another-company"}),
        "expired": signer.sign(
            {**claims, "iat": now - 2 * hour, "nbf": now - 2 * hour, "exp": now - hour}
        ),
        "revoked": leaked,
        "badly signed": forger.sign(claims),
        "tampered": good[: good.rindex(".")] + "." + good[good.rindex(".") + 1 :][::-1],
        "replayed from another deployment": signer.sign({**claims, "iss": "https://id.elsewhere"}),
    }


async def test_bad_tokens_are_refused_by_every_service(mesh: Mesh) -> None:
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    good = await (await mesh.client(tenant, "scout", ["memory:read:scout", "tools:call:*"]))()
    await mesh.recall(good, tenant)
    assert (await mesh.tools.get("/v1/tools", headers=_bearer(good))).status_code == 200
    assert (await mesh.http.get("/v1/inbox", headers=_bearer(good))).status_code == 200

    for problem, bad in (await _bad_tokens(mesh, tenant, good)).items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.recall(bad, tenant)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, problem
        for api, path in ((mesh.tools, "/v1/tools"), (mesh.http, "/v1/inbox")):
            answer = await api.get(path, headers=_bearer(bad))
            assert answer.status_code == 401, (problem, path, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer"), problem


async def test_a_token_of_one_tenant_never_reads_another_tenants_memory_or_mail(
    mesh: Mesh,
) -> None:
    tenant, other = f"tenant-{uuid.uuid4().hex[:8]}", f"tenant-{uuid.uuid4().hex[:8]}"
    ours = await (await mesh.client(tenant, "scout", ["memory:read:scout"]))()
    theirs = await (await mesh.client(other, "scout", ["memory:read:scout"]))()
    sent = await mesh.http.post(
        "/v1/mail", json={"to": ["scout"], "body": "their secret"}, headers=_bearer(theirs)
    )
    assert sent.status_code == 201, sent.text
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.recall(ours, other)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    inbox = (await mesh.http.get("/v1/inbox", headers=_bearer(ours))).json()["messages"]
    assert inbox == []
    read = await mesh.http.post(
        f"/v1/inbox/{sent.json()['message_id']}/read", headers=_bearer(ours)
    )
    assert read.status_code == 404


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])
