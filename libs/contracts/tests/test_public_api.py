"""The package's public names are a contract: adding or removing one is deliberate."""

from __future__ import annotations

import types

import mainstay_contracts

# Topic modules (``mainstay_contracts.supervisor`` ...) are exported as each
# service's contracts land; their topics are pinned by the committed schemas.
API = {
    "BreakingChange",
    "CE_SPECVERSION_VALUE",
    "CONTENT_TYPE_JSON",
    "DLQ_HEADERS",
    "Header",
    "REGISTRY",
    "TopicKind",
    "TopicRegistry",
    "TopicSpec",
    "compare_schemas",
    "event_schema",
    "event_schema_filename",
    "event_schemas",
    "find_breaking_changes",
    "render_event_schema",
    "topic_name_problem",
}


def test_exported_names() -> None:
    exported = {
        name
        for name in mainstay_contracts.__all__
        if not isinstance(getattr(mainstay_contracts, name), types.ModuleType)
    }
    assert exported == API


def test_every_exported_name_exists() -> None:
    for name in mainstay_contracts.__all__:
        assert hasattr(mainstay_contracts, name), name
