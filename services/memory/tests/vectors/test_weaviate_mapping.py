"""The Weaviate adapter's translations, checked without a server.

These do not replace the contract suite (which needs ``WEAVIATE_URL``); they pin
down the parts that are pure functions: how a record becomes properties, how a
``VectorFilter`` becomes a Weaviate filter over those properties (evaluated
here with Weaviate's documented operator semantics), and how client errors
become Mainstay errors.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from weaviate import exceptions as wx

from mainstay_common.errors import (
    DependencyTimeout,
    DependencyUnavailable,
    InvalidArgument,
    MainstayError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from mainstay_memory.domain.model import Kind
from mainstay_memory.domain.ports import VectorFilter
from mainstay_memory.settings import VectorSettings
from mainstay_memory.store.vectors_weaviate import (
    OPEN,
    WeaviateVectorIndex,
    map_weaviate_errors,
    object_properties,
    search_filter,
)

from .conftest import T0, hours, item

if TYPE_CHECKING:
    from weaviate.collections.classes.filters import _Filters


def matches(f: _Filters, props: dict[str, Any]) -> bool:
    """Evaluate a client filter over stored properties (field tokenization: whole values)."""
    operator = f.operator.value  # type: ignore[attr-defined]
    if operator == "And":
        return all(matches(sub, props) for sub in f.filters)  # type: ignore[attr-defined]
    if operator == "Or":
        return any(matches(sub, props) for sub in f.filters)  # type: ignore[attr-defined]
    stored, value = props[f.target], f.value  # type: ignore[attr-defined]
    return {
        "Equal": lambda: stored == value,
        "ContainsAny": lambda: stored in value,
        "LessThanEqual": lambda: stored <= value,
        "GreaterThan": lambda: stored > value,
    }[operator]()


def visible(where: VectorFilter, *items: Any) -> set[str]:
    condition = search_filter(where)
    return {i.record_id for i in items if matches(condition, object_properties(i))}


V = [1.0, 0.0]


def test_empty_scope_fields_are_stored_as_matchable_non_empty_text() -> None:
    props = object_properties(item(V, tenant="acme", agent_id="a1"))
    assert props["tenant"] == "=acme="
    assert props["agent_id"] == "=a1="
    assert props["user_id"] == "=="  # Weaviate would treat "" as null
    # Field tokenization trims whitespace: the wrapping keeps "acme " apart from "acme".
    assert object_properties(item(V, tenant="acme "))["tenant"] == "=acme ="
    assert props["kind"] == "fact"


def test_empty_string_and_none_semantics() -> None:
    no_user = item(V, agent_id="a1")
    with_user = item(V, agent_id="a1", user_id="u1")
    other_tenant = item(V, tenant="other", agent_id="a1")
    everyone = (no_user, with_user, other_tenant)

    assert visible(VectorFilter("acme", user_id=""), *everyone) == {no_user.record_id}
    assert visible(VectorFilter("acme", user_id="u1"), *everyone) == {with_user.record_id}
    assert visible(VectorFilter("acme"), *everyone) == {no_user.record_id, with_user.record_id}
    assert visible(VectorFilter("acme", agent_id=""), *everyone) == set()


def test_kinds_validity_and_as_of() -> None:
    fact = item(V, kind=Kind.FACT)
    decision = item(V, kind=Kind.DECISION, valid_from=T0 + hours(1), valid_to=T0 + hours(3))
    both = (fact, decision)

    assert visible(VectorFilter("acme", kinds=frozenset({Kind.DECISION})), *both) == set()
    kinds = VectorFilter("acme", kinds=frozenset({Kind.DECISION}), current_only=False)
    assert visible(kinds, *both) == {decision.record_id}
    assert visible(VectorFilter("acme"), *both) == {fact.record_id}

    def at(h: float) -> VectorFilter:
        return VectorFilter("acme", current_only=False, as_of=T0 + hours(h))

    assert visible(at(1), *both) == {fact.record_id, decision.record_id}
    assert visible(at(3), *both) == {fact.record_id}  # valid_to is exclusive
    assert visible(at(0.5), *both) == {fact.record_id}


def test_validity_is_exact_epoch_microseconds_in_any_timezone() -> None:
    moment = datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    props = object_properties(item(V, valid_from=moment))
    assert props["valid_from"] == 1748773815123456
    assert props["valid_to"] == OPEN
    assert datetime.fromtimestamp(OPEN / 1e6, tz=UTC).year == 2255


def test_a_search_without_a_tenant_or_with_a_naive_moment_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="tenant"):
        search_filter(VectorFilter(""))
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        search_filter(VectorFilter("acme", as_of=datetime(2025, 1, 1)))


def test_settings_are_checked_without_connecting() -> None:
    with pytest.raises(InvalidArgument, match="WEAVIATE_URL"):
        WeaviateVectorIndex(VectorSettings(backend="weaviate"), dimension=4)
    with pytest.raises(InvalidArgument, match="http://host:8080"):
        WeaviateVectorIndex(VectorSettings(weaviate_url="weaviate:8080"), dimension=4)
    index = WeaviateVectorIndex(
        VectorSettings(weaviate_url="https://w.example:8443", weaviate_collection="Memories"),
        dimension=4,
    )
    assert index.dimension == 4


def _status(code: int) -> wx.UnexpectedStatusCodeError:
    request = httpx.Request("GET", "http://weaviate:8080/v1/objects")
    return wx.UnexpectedStatusCodeError("call", httpx.Response(code, request=request))


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _query_error(code: grpc.StatusCode) -> wx.WeaviateQueryError:
    exc = wx.WeaviateQueryError("details", "GRPC search")
    exc.__context__ = _RpcError(code)  # the client raises it while handling the gRPC error
    return exc


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (_status(401), Unauthenticated),
        (_status(403), PermissionDenied),
        (_status(404), NotFound),
        (_status(408), DependencyTimeout),
        (_status(422), InvalidArgument),
        (_status(429), DependencyUnavailable),
        (_status(503), DependencyUnavailable),
        (wx.WeaviateTimeoutError("slow"), DependencyTimeout),
        (wx.WeaviateConnectionError("refused"), DependencyUnavailable),
        (wx.WeaviateGRPCUnavailableError(), DependencyUnavailable),
        (wx.WeaviateClosedClientError(), DependencyUnavailable),
        (_query_error(grpc.StatusCode.UNAVAILABLE), DependencyUnavailable),
        (_query_error(grpc.StatusCode.DEADLINE_EXCEEDED), DependencyTimeout),
        (_query_error(grpc.StatusCode.INVALID_ARGUMENT), InvalidArgument),
        (_query_error(grpc.StatusCode.INTERNAL), DependencyUnavailable),
        (wx.WeaviateInvalidInputError("bad"), InvalidArgument),
    ],
)
def test_client_errors_map_to_the_mainstay_tree(
    raised: Exception, expected: type[MainstayError]
) -> None:
    with pytest.raises(expected) as caught, map_weaviate_errors():
        raise raised
    assert caught.value.__cause__ is raised
    assert "body" not in str(caught.value)


def test_unclassified_errors_pass_through() -> None:
    with pytest.raises(wx.WeaviateQueryError), map_weaviate_errors():
        raise _query_error(grpc.StatusCode.UNIMPLEMENTED)
    with pytest.raises(KeyError), map_weaviate_errors():
        raise KeyError("x")
