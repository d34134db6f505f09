"""Mainstay contracts: message models and the topic registry (pydantic only)."""

from mainstay_contracts import supervisor
from mainstay_contracts._headers import CE_SPECVERSION_VALUE, CONTENT_TYPE_JSON, DLQ_HEADERS, Header
from mainstay_contracts._registry import (
    REGISTRY,
    TopicKind,
    TopicRegistry,
    TopicSpec,
    topic_name_problem,
)

__all__ = [
    "CE_SPECVERSION_VALUE",
    "CONTENT_TYPE_JSON",
    "DLQ_HEADERS",
    "REGISTRY",
    "Header",
    "TopicKind",
    "TopicRegistry",
    "TopicSpec",
    "supervisor",
    "topic_name_problem",
]
