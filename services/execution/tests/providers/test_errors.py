"""Every way a model call fails, for both APIs, as the execution loop will see it."""

from __future__ import annotations

import email.utils
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import pytest

from mainstay_contracts.supervisor import ModelRef
from mainstay_execution.providers import Message, ModelError
from mainstay_execution.testing.fake_models import (
    Disconnect,
    HttpFailure,
    MalformedBody,
    Reply,
    Stall,
)

from .conftest import API_KEY

if TYPE_CHECKING:
    from mainstay_execution.providers import Providers
    from mainstay_execution.testing.fake_models import FakeModelServer, Step

Api = Literal["openai", "anthropic"]
APIS: list[Api] = ["openai", "anthropic"]
HELLO = [Message("user", "hello")]


async def fail(
    server: FakeModelServer,
    providers: Providers,
    api: Api,
    step: Step,
    *,
    api_key: str = API_KEY,
    timeout_s: float = 10.0,
) -> ModelError:
    server.script("m", [step])
    model = server.model_ref(api, "m", timeout_s=timeout_s)
    with pytest.raises(ModelError) as caught:
        await providers.complete(model, HELLO, [], api_key=api_key)
    error = caught.value
    assert error.provider == api
    assert error.model == "m"
    assert str(error).startswith(f"{api} model 'm' via {server.url}/")
    assert API_KEY not in str(error)
    return error


@pytest.mark.parametrize("api", APIS)
async def test_429_with_retry_after_seconds(
    server: FakeModelServer, providers: Providers, api: Api
) -> None:
    error = await fail(server, providers, api, HttpFailure(429, "slow down", retry_after=3))
    assert (error.kind, error.status, error.retry_after) == ("rate_limited", 429, 3.0)
    assert "slow down" in str(error)
    assert error.retryable


@pytest.mark.parametrize("api", APIS)
async def test_429_with_retry_after_as_a_date(
    server: FakeModelServer, providers: Providers, api: Api
) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    error = await fail(server, providers, api, HttpFailure(429, retry_after=when))
    assert error.kind == "rate_limited"
    assert error.retry_after is not None
    assert 25 < error.retry_after <= 30


async def test_openai_retry_after_ms_wins(server: FakeModelServer, providers: Providers) -> None:
    step = HttpFailure(429, retry_after=20, headers={"retry-after-ms": "1500"})
    error = await fail(server, providers, "openai", step)
    assert error.retry_after == 1.5


async def test_an_exhausted_openai_quota_is_permanent(
    server: FakeModelServer, providers: Providers
) -> None:
    step = HttpFailure(
        429,
        "You exceeded your current quota",
        error_type="insufficient_quota",
        code="insufficient_quota",
    )
    error = await fail(server, providers, "openai", step)
    assert (error.kind, error.status) == ("permanent", 429)
    assert "exceeded your current quota" in str(error)


@pytest.mark.parametrize("api", APIS)
async def test_503_is_overloaded(server: FakeModelServer, providers: Providers, api: Api) -> None:
    error = await fail(server, providers, api, HttpFailure(503, retry_after=1))
    assert (error.kind, error.status, error.retry_after) == ("overloaded", 503, 1.0)


async def test_anthropic_529_is_overloaded(server: FakeModelServer, providers: Providers) -> None:
    error = await fail(server, providers, "anthropic", HttpFailure(529, "Overloaded"))
    assert (error.kind, error.status) == ("overloaded", 529)
    assert "overloaded_error" in str(error)
    assert "Overloaded" in str(error)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("status", [500, 502, 504])
async def test_server_errors_are_transient(
    server: FakeModelServer, providers: Providers, api: Api, status: int
) -> None:
    error = await fail(server, providers, api, HttpFailure(status, "internal"))
    assert (error.kind, error.status) == ("transient", status)


@pytest.mark.parametrize("api", APIS)
async def test_a_proxy_page_as_error_body(
    server: FakeModelServer, providers: Providers, api: Api
) -> None:
    error = await fail(server, providers, api, HttpFailure(502, body="<html>Bad Gateway</html>"))
    assert error.kind == "transient"
    assert "<html>" not in str(error)
    assert "24 bytes" in str(error)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_client_errors_are_permanent(
    server: FakeModelServer, providers: Providers, api: Api, status: int
) -> None:
    error = await fail(server, providers, api, HttpFailure(status, f"no such thing {status}"))
    assert (error.kind, error.status) == ("permanent", status)
    assert f"no such thing {status}" in str(error)
    assert not error.retryable


@pytest.mark.parametrize("api", APIS)
async def test_a_wrong_key_is_permanent_and_never_repeated(
    server: FakeModelServer, providers: Providers, api: Api
) -> None:
    wrong = "sk-wrong-key-987654321"
    # The fake's 401 quotes the key it got, as a careless proxy would.
    server.script("m", [Reply("unused")])
    model = server.model_ref(api, "m")
    with pytest.raises(ModelError) as caught:
        await providers.complete(model, HELLO, [], api_key=wrong)
    error = caught.value
    assert (error.kind, error.status) == ("permanent", 401)
    assert "Incorrect API key provided" in str(error)
    assert wrong not in str(error)
    assert wrong not in repr(error)
    assert server.requests[-1].authorized is False
    assert server.pending("m") == 1  # a refused request consumes no step


@pytest.mark.parametrize("api", APIS)
async def test_a_timeout_is_transient(
    server: FakeModelServer, providers: Providers, api: Api
) -> None:
    error = await fail(server, providers, api, Stall(30), timeout_s=0.3)
    assert (error.kind, error.status) == ("transient", None)
    assert "0.3 s" in str(error)


@pytest.mark.parametrize("api", APIS)
async def test_a_dropped_connection_is_transient(
    server: FakeModelServer, providers: Providers, api: Api
) -> None:
    error = await fail(server, providers, api, Disconnect())
    assert (error.kind, error.status) == ("transient", None)
    assert "disconnected" in str(error)


@pytest.mark.parametrize("api", APIS)
async def test_connection_refused_is_transient(providers: Providers, api: Api) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}" + ("/v1" if api == "openai" else "")
    model = ModelRef(provider=api, model="m", base_url=base_url, timeout_s=5)
    with pytest.raises(ModelError) as caught:
        await providers.complete(model, HELLO, [], api_key=API_KEY)
    assert (caught.value.kind, caught.value.status) == ("transient", None)
    assert "connect error" in str(caught.value)


@pytest.mark.parametrize("api", APIS)
async def test_a_bad_base_url_is_permanent(providers: Providers, api: Api) -> None:
    model = ModelRef(provider=api, model="m", base_url="localhost:8000/v1")
    with pytest.raises(ModelError) as caught:
        await providers.complete(model, HELLO, [], api_key=API_KEY)
    assert caught.value.kind == "permanent"


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("<html>oops</html>", "the body is not JSON"),
        ("[1, 2]", "the body is not a JSON object"),
        ('{"object": "chat.completion"}', "no '"),
    ],
)
async def test_a_200_that_is_not_a_completion_is_malformed(
    server: FakeModelServer, providers: Providers, api: Api, body: str, problem: str
) -> None:
    error = await fail(server, providers, api, MalformedBody(body))
    assert (error.kind, error.status) == ("malformed", 200)
    assert problem in str(error)
    assert error.retryable


async def test_openai_choice_without_a_message_is_malformed(
    server: FakeModelServer, providers: Providers
) -> None:
    error = await fail(server, providers, "openai", MalformedBody('{"choices": [{"index": 0}]}'))
    assert error.kind == "malformed"
    assert "no 'message'" in str(error)


async def test_the_endpoint_in_messages_has_no_query_or_credentials(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script("m", [HttpFailure(500)])
    base_url = server.openai_base_url.replace("http://", "http://user:hunter2@")
    model = ModelRef(provider="openai", model="m", base_url=base_url)
    with pytest.raises(ModelError) as caught:
        await providers.complete(model, HELLO, [], api_key=API_KEY)
    assert "hunter2" not in str(caught.value)
    assert f"{server.url}/v1/chat/completions" in str(caught.value)
