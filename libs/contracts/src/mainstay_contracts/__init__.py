"""Mainstay contracts: message models and the topic registry (pydantic only)."""

from mainstay_contracts import execution, identity, ledger, memory, supervisor, tools
from mainstay_contracts._compat import BreakingChange, compare_schemas, find_breaking_changes
from mainstay_contracts._headers import CE_SPECVERSION_VALUE, CONTENT_TYPE_JSON, DLQ_HEADERS, Header
from mainstay_contracts._registry import (
    REGISTRY,
    TopicKind,
    TopicRegistry,
    TopicSpec,
    topic_name_problem,
)
from mainstay_contracts._schema import (
    event_schema,
    event_schema_filename,
    event_schemas,
    render_event_schema,
)

__all__ = [
    "CE_SPECVERSION_VALUE",
    "CONTENT_TYPE_JSON",
    "DLQ_HEADERS",
    "REGISTRY",
    "BreakingChange",
    "Header",
    "TopicKind",
    "TopicRegistry",
    "TopicSpec",
    "compare_schemas",
    "event_schema",
    "event_schema_filename",
    "event_schemas",
    "execution",
    "find_breaking_changes",
    "identity",
    "ledger",
    "memory",
    "render_event_schema",
    "supervisor",
    "tools",
    "topic_name_problem",
]
