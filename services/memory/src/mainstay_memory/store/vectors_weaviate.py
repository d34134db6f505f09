"""The Weaviate adapter of :class:`~mainstay_memory.domain.ports.VectorIndex`.

One collection (``MEMORY_VECTORS_WEAVIATE_COLLECTION``) holds every tenant;
an object's UUID is its record id, its vector is self-provided (named
``embedding``, HNSW, cosine). The async client never blocks the event loop.
How the port's semantics survive Weaviate's:

- **Scope fields** use ``field`` tokenization (``word`` would let
  ``equal("acme")`` match ``"Acme Corp"``) and are wrapped in ``=``: Weaviate
  treats ``""`` as null, and the port needs ``""`` ("stored without that
  field") matchable like any value; and field tokenization trims whitespace,
  which would let tenant ``"acme "`` read tenant ``"acme"``.
- **Validity** is two INT properties in epoch microseconds (exact, no date
  precision questions); a still-valid record has ``valid_to = OPEN``, so
  "current" and "valid at t" are plain comparisons needing no null index.
- **Tenants** are a filtered property, not Weaviate multi-tenancy, whose
  tenants would have to be created ahead of every first write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import weaviate
from weaviate import exceptions as wx
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.exceptions import UnexpectedStatusCodeError

from mainstay_common.errors import (
    AlreadyExists,
    Conflict,
    DependencyTimeout,
    DependencyUnavailable,
    ErrorMapper,
    InvalidArgument,
    MainstayError,
    NotFound,
    PermissionDenied,
    RuleViolation,
    Unauthenticated,
    map_httpx_errors,
)
from mainstay_common.lifecycle import Resource
from mainstay_memory.domain.ports import VectorHit
from mainstay_memory.store.vectors import (
    check_items,
    check_limit,
    check_moment,
    check_record_ids,
    check_vector,
    dimension_mismatch,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from weaviate.collections.classes.filters import _Filters

    from mainstay_memory.domain.ports import IndexedVector, Vector, VectorFilter
    from mainstay_memory.settings import VectorSettings

__all__ = [
    "OPEN",
    "VECTOR_NAME",
    "WeaviateVectorIndex",
    "map_weaviate_errors",
    "object_properties",
    "search_filter",
]

_log = logging.getLogger(__name__)

VECTOR_NAME = "embedding"
OPEN = 2**53 - 1
"""``valid_to`` of a record still valid: epoch µs that stays exact even as a JSON double."""

_TEXT = ("tenant", "agent_id", "user_id", "session_id", "kind")
_MOMENTS = ("valid_from", "valid_to")
_TIMEOUT = Timeout(init=10, query=30, insert=60)
_DELETE_CHUNK = 500  # stays well under Weaviate's QUERY_MAXIMUM_RESULTS per delete
_UPDATE_CONCURRENCY = 16
_EPOCH, _MICROSECOND = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)


class WeaviateVectorIndex(Resource):
    """Nearest-neighbour search in a Weaviate collection; :meth:`start` connects."""

    def __init__(self, settings: VectorSettings, *, dimension: int) -> None:
        if not settings.weaviate_url:
            raise InvalidArgument("the Weaviate vector index needs MEMORY_VECTORS_WEAVIATE_URL")
        url = urlsplit(settings.weaviate_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgument(
                f"MEMORY_VECTORS_WEAVIATE_URL must look like http://host:8080, not {url.geturl()!r}"
            )
        secure = url.scheme == "https"
        api_key = settings.weaviate_api_key
        self._client = weaviate.use_async_with_custom(
            http_host=url.hostname,
            http_port=url.port or (443 if secure else 80),
            http_secure=secure,
            grpc_host=url.hostname,
            grpc_port=settings.weaviate_grpc_port,
            grpc_secure=secure,
            auth_credentials=Auth.api_key(api_key.get_secret_value()) if api_key else None,
            additional_config=AdditionalConfig(timeout=_TIMEOUT),
        )
        self._name = settings.weaviate_collection
        self._settings = settings
        self._dimension = dimension
        self._collection = self._client.collections.use(self._name)

    @property
    def dimension(self) -> int:
        return self._dimension

    async def start(self) -> None:
        """Connect, create the collection when missing, check it holds ``dimension`` vectors."""
        try:
            with _errors():
                await self._client.connect()
                if not await self._client.collections.exists(self._name):
                    await self._create_collection()
                found = await self._collection.query.fetch_objects(limit=1, include_vector=True)
            for obj in found.objects:
                stored = obj.vector.get(VECTOR_NAME)
                if stored is not None and len(stored) != self._dimension:
                    where, other = f"Weaviate collection {self._name}", "use another collection"
                    raise dimension_mismatch(where, len(stored), self._dimension, other)
        except BaseException:
            with contextlib.suppress(Exception):  # the start's own error is the one to see
                await self.close()  # nobody else holds the client of a failed start
            raise

    async def _create_collection(self) -> None:
        s = self._settings
        properties = [_property(name, DataType.TEXT) for name in _TEXT]
        properties += [_property(name, DataType.INT) for name in _MOMENTS]
        try:
            await self._client.collections.create(
                self._name,
                description="Mainstay memory vectors (uuid = memory record id)",
                properties=properties,
                vector_config=Configure.Vectors.self_provided(
                    name=VECTOR_NAME,
                    vector_index_config=Configure.VectorIndex.hnsw(
                        distance_metric=VectorDistances.COSINE,
                        max_connections=s.hnsw_m,
                        ef_construction=s.hnsw_ef_construction,
                        ef=s.hnsw_ef_search,
                    ),
                ),
            )
        except UnexpectedStatusCodeError as exc:
            # Another instance created it between our check and our create.
            if exc.status_code != 422 or not await self._client.collections.exists(self._name):
                raise
        _log.info("created Weaviate collection %s", self._name)

    async def close(self) -> None:
        with _errors():
            await self._client.close()

    async def aclose(self) -> None:
        await self.close()

    # -- writes ---------------------------------------------------------------

    async def upsert(self, items: Sequence[IndexedVector]) -> None:
        if not items:
            return
        ids = check_items(items, self._dimension)
        # A batch import replaces an object with the same UUID; within one
        # batch the last item for a record wins, as in the pgvector adapter.
        latest = dict(zip(ids, items, strict=True))
        objects = [
            DataObject(
                uuid=record_id,
                properties=object_properties(item),
                vector={VECTOR_NAME: list(item.vector)},
            )
            for record_id, item in latest.items()
        ]
        with _errors():
            result = await self._collection.data.insert_many(objects)
        if result.errors:
            first = next(iter(result.errors.values()))
            _log.warning(
                "Weaviate rejected %d vectors, first: %s", len(result.errors), first.message
            )
            raise DependencyUnavailable(
                f"Weaviate rejected {len(result.errors)} of {len(objects)} vectors"
            )

    async def set_validity(self, record_ids: Sequence[str], *, valid_to: datetime | None) -> None:
        ids = check_record_ids(record_ids)
        end = OPEN if valid_to is None else _micros(check_moment(valid_to, "valid_to"))
        gate = asyncio.Semaphore(_UPDATE_CONCURRENCY)

        async def update(record_id: str) -> None:
            async with gate:
                with _errors():
                    try:
                        await self._collection.data.update(
                            uuid=record_id, properties={"valid_to": end}
                        )
                    except UnexpectedStatusCodeError as exc:
                        if exc.status_code != 404:  # unknown record: nothing to close, as in SQL
                            raise

        # No batch partial update exists; a supersede or forget touches a handful
        # of records. gather, not a TaskGroup: callers expect one plain error.
        outcomes = await asyncio.gather(
            *(update(record_id) for record_id in dict.fromkeys(ids)), return_exceptions=True
        )
        if failures := [o for o in outcomes if isinstance(o, BaseException)]:
            raise failures[0]

    async def delete(self, record_ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(check_record_ids(record_ids)))
        with _errors():
            for start in range(0, len(ids), _DELETE_CHUNK):
                chunk = ids[start : start + _DELETE_CHUNK]
                await self._collection.data.delete_many(where=Filter.by_id().contains_any(chunk))

    # -- reads ----------------------------------------------------------------

    async def search(self, query: Vector, *, where: VectorFilter, limit: int) -> list[VectorHit]:
        check_vector(query, self._dimension)
        check_limit(limit)
        filters = search_filter(where)
        if limit == 0:
            return []
        with _errors():
            result = await self._collection.query.near_vector(
                near_vector=list(query),
                target_vector=VECTOR_NAME,
                limit=limit,
                filters=filters,
                return_metadata=MetadataQuery(distance=True),
                return_properties=[],
            )
        hits = [
            VectorHit(str(obj.uuid), 1.0 - float(obj.metadata.distance or 0.0))
            for obj in result.objects
        ]
        hits.sort(key=lambda hit: hit.similarity, reverse=True)
        return hits


def object_properties(item: IndexedVector) -> dict[str, Any]:
    """The Weaviate properties of one vector (see the module docstring for the encoding)."""
    return {
        "tenant": _text(item.scope.tenant),
        "agent_id": _text(item.scope.agent_id),
        "user_id": _text(item.scope.user_id),
        "session_id": _text(item.scope.session_id),
        "kind": str(item.kind),
        "valid_from": _micros(item.valid_from),
        "valid_to": OPEN if item.valid_to is None else _micros(item.valid_to),
    }


def search_filter(where: VectorFilter) -> _Filters:
    """``where`` as a Weaviate filter over :func:`object_properties`."""
    if not where.tenant:
        raise InvalidArgument("a vector search needs a tenant")
    parts = [Filter.by_property("tenant").equal(_text(where.tenant))]
    for name in ("agent_id", "user_id", "session_id"):
        value = getattr(where, name)
        if value is not None:
            parts.append(Filter.by_property(name).equal(_text(value)))
    if where.kinds:
        parts.append(Filter.by_property("kind").contains_any(sorted(str(k) for k in where.kinds)))
    if where.current_only:
        parts.append(Filter.by_property("valid_to").equal(OPEN))
    if where.as_of is not None:
        moment = _micros(check_moment(where.as_of, "as_of"))
        parts.append(Filter.by_property("valid_from").less_or_equal(moment))
        parts.append(Filter.by_property("valid_to").greater_than(moment))
    return Filter.all_of(parts)


def _property(name: str, data_type: DataType) -> Property:
    text = data_type is DataType.TEXT
    return Property(
        name=name,
        data_type=data_type,
        index_filterable=True,
        skip_vectorization=True,
        tokenization=Tokenization.FIELD if text else None,  # whole values, see above
        index_searchable=False if text else None,
        index_range_filters=None if text else True,
    )


def _text(value: str) -> str:
    return f"={value}="


def _micros(moment: datetime) -> int:
    """Exact epoch microseconds (``timestamp()`` would round through a float)."""
    return (moment - _EPOCH) // _MICROSECOND


def map_weaviate_errors() -> ErrorMapper:
    """Map Weaviate client failures into the Mainstay error tree.

    HTTP statuses map as :func:`~mainstay_common.errors.map_httpx_errors` maps them,
    gRPC failures (searches, batches, deletes) as ``map_grpc_errors`` does,
    client timeouts to ``DependencyTimeout``, connection, closed-client and
    exhausted-retry errors to ``DependencyUnavailable``, invalid input to
    ``InvalidArgument``; anything else passes through. Messages name the
    status, never the response body, which can quote data.
    """
    return ErrorMapper(_translate)


_STATUS = {
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    408: DependencyTimeout,
    409: Conflict,
}
_UNAVAILABLE = (
    wx.WeaviateConnectionError,
    wx.WeaviateGRPCUnavailableError,
    wx.WeaviateClosedClientError,
    wx.WeaviateRetryError,
    wx.WeaviateStartUpError,
)
# As mainstay_common.errors.map_grpc_errors classifies an RpcError; the client
# raises its own error instead and keeps the RpcError only as its context.
_GRPC: dict[str, type[MainstayError]] = {
    "UNAVAILABLE": DependencyUnavailable,
    "RESOURCE_EXHAUSTED": DependencyUnavailable,
    "CANCELLED": DependencyUnavailable,
    "INTERNAL": DependencyUnavailable,
    "UNKNOWN": DependencyUnavailable,
    "DEADLINE_EXCEEDED": DependencyTimeout,
    "ABORTED": Conflict,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "FAILED_PRECONDITION": RuleViolation,
}


def _translate(exc: Exception) -> MainstayError | None:  # noqa: PLR0911 (one return per row)
    if isinstance(exc, wx.InsufficientPermissionsError):
        return PermissionDenied("weaviate: permission denied")
    if isinstance(exc, UnexpectedStatusCodeError):
        status = exc.status_code
        error = _STATUS.get(status)
        if error is None:
            error = DependencyUnavailable if status == 429 or status >= 500 else InvalidArgument
        return error(f"weaviate: HTTP {status}")
    if isinstance(exc, wx.WeaviateTimeoutError | TimeoutError):
        return DependencyTimeout("weaviate: request timed out")
    if isinstance(exc, _UNAVAILABLE):
        return DependencyUnavailable(f"weaviate unavailable: {type(exc).__name__}")
    if isinstance(exc, wx.WeaviateQueryError):
        return _from_grpc(exc)
    if isinstance(exc, wx.WeaviateInvalidInputError):
        return InvalidArgument("weaviate: invalid input")
    return None


def _from_grpc(exc: Exception) -> MainstayError | None:
    """Classify a gRPC search/batch/delete failure by the status found in its context chain."""
    link: BaseException | None = exc
    for _ in range(8):  # bounded: a context chain may loop
        if link is None:
            break
        if isinstance(link, wx.WeaviateRetryError):  # the client retried, then gave up
            return DependencyUnavailable("weaviate unavailable: retries exhausted")
        code = getattr(link, "code", None)
        name = getattr(code(), "name", "") if callable(code) else ""
        if name in _GRPC:
            return _GRPC[name](f"weaviate: {type(exc).__name__} (gRPC {name})")
        link = link.__cause__ or link.__context__
    return None


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    with map_weaviate_errors(), map_httpx_errors("weaviate"):
        yield
