"""The exported names are the contract: adding or removing one must be deliberate."""

from __future__ import annotations

import mainstay_execution.providers
import mainstay_execution.providers.anthropic
import mainstay_execution.providers.base
import mainstay_execution.providers.openai
import mainstay_execution.testing.fake_models


def test_providers_exports() -> None:
    assert sorted(mainstay_execution.providers.__all__) == [
        "ErrorKind",
        "Message",
        "ModelError",
        "ModelReply",
        "Provider",
        "Providers",
        "Role",
        "ToolCall",
        "ToolSpec",
        "Usage",
    ]
    assert sorted(mainstay_execution.providers.base.__all__) == [
        "ErrorKind",
        "Message",
        "ModelError",
        "ModelReply",
        "Provider",
        "Role",
        "ToolCall",
        "ToolSpec",
        "Usage",
        "parse_arguments",
    ]
    assert sorted(mainstay_execution.providers.openai.__all__) == [
        "OpenAIProvider",
        "PUBLIC_BASE_URL",
    ]
    assert sorted(mainstay_execution.providers.anthropic.__all__) == [
        "ANTHROPIC_VERSION",
        "AnthropicProvider",
        "DEFAULT_MAX_TOKENS",
        "PUBLIC_BASE_URL",
    ]


def test_fake_models_exports() -> None:
    assert sorted(mainstay_execution.testing.fake_models.__all__) == [
        "CallTool",
        "Disconnect",
        "FakeModelServer",
        "FakeRequest",
        "HttpFailure",
        "MalformedBody",
        "Reply",
        "Responder",
        "Stall",
        "Step",
        "ToolLoopResponder",
        "example_arguments",
    ]


def test_every_export_exists() -> None:
    for module in (
        mainstay_execution.providers,
        mainstay_execution.providers.anthropic,
        mainstay_execution.providers.base,
        mainstay_execution.providers.openai,
        mainstay_execution.testing.fake_models,
    ):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
