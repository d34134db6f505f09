"""A token the identity service revokes stops working in the memory service."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import httpx
import jwt
import pytest
from cryptography.fernet import Fernet

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.auth import TokenSigner
from mainstay_common.grpc import create_channel
from mainstay_common.settings import AuthSettings, KafkaSettings, PostgresSettings
from mainstay_identity.app import IdentityApp
from mainstay_identity.settings import IdentitySettings
from mainstay_memory.app import MemoryApp
from mainstay_memory.settings import MemorySettings

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.real


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def test_a_revoked_token_and_a_revoked_client_are_refused_by_memory(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    operator = TokenSigner.generate()  # signs the operators' admin tokens
    (tmp_path / "jwks.json").write_text(json.dumps(operator.jwks()))
    database = f"identity_test_{uuid.uuid4().hex[:8]}"
    admin_db = await asyncpg.connect(postgres_dsn)
    await admin_db.execute(f'CREATE DATABASE "{database}"')
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    try:
        kafka = KafkaSettings(
            bootstrap=kafka_bootstrap,
            topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
            session_timeout_ms=2000,
            heartbeat_interval_ms=300,
        )
        identity_settings = IdentitySettings(
            http_port=0,
            shutdown_grace_s=2.0,
            kafka=kafka,
            postgres=PostgresSettings(dsn=with_database(postgres_dsn, database)),
            auth=AuthSettings(jwks_file=str(tmp_path / "jwks.json")),
            key_secrets=[Fernet.generate_key().decode()],
        )
        async with IdentityApp(identity_settings) as identity:
            base = f"http://127.0.0.1:{identity.http_port}"
            memory_settings = MemorySettings(
                grpc_port=0,
                http_port=0,
                shutdown_grace_s=2.0,
                kafka=kafka,
                postgres=PostgresSettings(dsn=postgres_dsn),
                auth=AuthSettings(
                    jwks_url=f"{base}/.well-known/jwks.json",
                    jwks_file=None,
                    revocations_url=f"{base}/v1/revocations",
                    revocations_poll_s=0.2,
                ),
            )
            async with (
                MemoryApp(memory_settings) as memory,
                httpx.AsyncClient(base_url=base) as http,
            ):
                admin = {
                    "Authorization": "Bearer "
                    + operator.mint(subject="operator", tenant=tenant, scopes=["identity:admin"])
                }
                await http.put(
                    f"/v1/tenants/{tenant}/principals/scout",
                    json={"kind": "agent", "scopes": ["memory:read:scout"]},
                    headers=admin,
                )
                secret = (
                    await http.post(f"/v1/tenants/{tenant}/principals/scout/secret", headers=admin)
                ).json()["client_secret"]

                async def token() -> str:
                    answer = await http.post(
                        "/oauth/token",
                        data={
                            "grant_type": "client_credentials",
                            "client_id": f"{tenant}/scout",
                            "client_secret": secret,
                        },
                    )
                    return str(answer.json()["access_token"])

                first, second = await token(), await token()
                channel = create_channel(f"127.0.0.1:{memory.grpc_port}")
                stub = memory_pb2_grpc.MemoryServiceStub(channel)

                async def recall(bearer: str) -> pb.RecallResponse:
                    return await stub.Recall(
                        pb.RecallRequest(
                            scope=pb.Scope(tenant=tenant, agent_id="scout"), query="anything"
                        ),
                        metadata=[("authorization", f"Bearer {bearer}")],
                    )

                try:
                    await recall(first)  # a token identity issued works in memory
                    first_jti = _jti(first)
                    revoked = await http.post(
                        f"/v1/tenants/{tenant}/revocations",
                        json={"jti": first_jti, "reason": "leaked in a log"},
                        headers=admin,
                    )
                    assert revoked.status_code == 201, revoked.text
                    await asyncio.sleep(0.3)  # one poll of the feed
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await recall(first)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert refused.value.details() == "token has been revoked"
                    await recall(second)  # only that token

                    await http.post(
                        f"/v1/tenants/{tenant}/revocations",
                        json={"client": "scout", "reason": "agent retired"},
                        headers=admin,
                    )
                    await asyncio.sleep(0.3)
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await recall(second)
                    assert refused.value.details() == "token has been revoked"
                    # The client is disabled too: no new tokens.
                    again = await http.post(
                        "/oauth/token",
                        data={
                            "grant_type": "client_credentials",
                            "client_id": f"{tenant}/scout",
                            "client_secret": secret,
                        },
                    )
                    assert again.status_code == 401
                    feed = (await http.get("/v1/revocations")).json()["revocations"]
                    assert any(e.get("jti") == first_jti for e in feed)
                    assert "scout" not in json.dumps(feed)  # clients only as digests
                finally:
                    await channel.close()
    finally:
        await admin_db.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin_db.close()


def _jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])
