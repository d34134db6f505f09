"""The VectorIndex contract: every adapter must behave exactly like this.

Each test runs once per backend (``open_index`` is parametrized): against the
real PostgreSQL for pgvector, and against the Weaviate server named by
``WEAVIATE_URL`` when there is one (skipped, with the reason, otherwise).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from mainstay_common.errors import InvalidArgument
from mainstay_memory.domain.model import Kind
from mainstay_memory.domain.ports import VectorFilter

from .conftest import DIM, T0, hours, item, near, unit

if TYPE_CHECKING:
    from mainstay_memory.domain.ports import VectorIndex

    from .conftest import OpenIndex

pytestmark = pytest.mark.real

ACME = VectorFilter(tenant="acme", current_only=False)


async def ids(index: VectorIndex, vector: list[float], **filters: Any) -> set[str]:
    """The ids a search in tenant ``acme`` returns (closed records included unless asked)."""
    where = VectorFilter(**{"tenant": "acme", "current_only": False, **filters})
    return {hit.record_id for hit in await index.search(vector, where=where, limit=100)}


async def test_search_returns_the_nearest_first_with_their_cosine_similarity(
    open_index: OpenIndex,
) -> None:
    rng = np.random.default_rng(1)
    index = await open_index()
    items = [item(unit(rng)) for _ in range(40)]
    await index.upsert(items)
    query = unit(rng)

    hits = await index.search(query.tolist(), where=ACME, limit=5)

    stored = np.array([i.vector for i in items], dtype=np.float32).astype(np.float64)
    similarity = stored @ query / np.linalg.norm(stored, axis=1)
    best = np.argsort(-similarity)[:5]
    assert [h.record_id for h in hits] == [items[i].record_id for i in best]
    assert [h.similarity for h in hits] == pytest.approx(similarity[best].tolist(), abs=1e-5)
    assert all(a.similarity >= b.similarity for a, b in itertools.pairwise(hits))


async def test_an_identical_vector_has_similarity_one_and_an_opposite_one_minus_one(
    open_index: OpenIndex,
) -> None:
    rng = np.random.default_rng(2)
    index = await open_index()
    v = unit(rng)
    same, opposite = item(v), item(-v)
    await index.upsert([same, opposite])

    hits = await index.search(v.tolist(), where=ACME, limit=2)

    assert [h.record_id for h in hits] == [same.record_id, opposite.record_id]
    assert [h.similarity for h in hits] == pytest.approx([1.0, -1.0], abs=1e-5)


async def test_upsert_replaces_the_vector_scope_and_kind_of_a_record(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(3)
    index = await open_index()
    a, b = unit(rng), unit(rng)
    first = item(a, agent_id="agent-1", kind=Kind.FACT)
    await index.upsert([first])
    await index.upsert([item(b, agent_id="agent-2", kind=Kind.DECISION, record_id=first.record_id)])

    hits = await index.search(b.tolist(), where=ACME, limit=10)

    assert [(h.record_id, round(h.similarity, 4)) for h in hits] == [(first.record_id, 1.0)]
    assert await ids(index, b.tolist(), agent_id="agent-1") == set()
    assert await ids(index, b.tolist(), kinds=frozenset({Kind.DECISION})) == {first.record_id}


async def test_the_last_item_for_a_record_in_one_batch_wins(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(4)
    index = await open_index()
    a, b = unit(rng), unit(rng)
    first = item(a)
    await index.upsert([first, item(b, record_id=first.record_id)])

    [hit] = await index.search(b.tolist(), where=ACME, limit=10)

    assert hit.similarity == pytest.approx(1.0, abs=1e-5)


async def test_a_search_never_returns_another_tenants_vectors(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(5)
    index = await open_index()
    shared = [unit(rng) for _ in range(10)]
    acme = [item(v, tenant="acme") for v in shared]
    # Identical vectors in a tenant whose name only differs by case and suffix.
    others = [item(v, tenant=t) for v in shared for t in ("Acme", "acme-corp", "acme ")]
    await index.upsert([*acme, *others])

    for v in shared:
        found = await index.search(v.tolist(), where=ACME, limit=50)
        assert {h.record_id for h in found} == {i.record_id for i in acme}


async def test_agent_user_and_session_filters_isolate_scopes(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(6)
    index = await open_index()
    q = unit(rng)
    a1 = item(near(q, rng, 0.1), agent_id="agent-1", user_id="u1", session_id="s1")
    a1b = item(near(q, rng, 0.1), agent_id="agent-1", user_id="u2", session_id="s1")
    a2 = item(near(q, rng, 0.1), agent_id="agent-2", user_id="u1", session_id="s1")
    await index.upsert([a1, a1b, a2])

    assert await ids(index, q.tolist()) == {a1.record_id, a1b.record_id, a2.record_id}
    assert await ids(index, q.tolist(), agent_id="agent-1") == {a1.record_id, a1b.record_id}
    assert await ids(index, q.tolist(), agent_id="agent-1", user_id="u1") == {a1.record_id}
    assert await ids(index, q.tolist(), user_id="u1") == {a1.record_id, a2.record_id}
    assert await ids(index, q.tolist(), session_id="s2") == set()
    assert await ids(index, q.tolist(), agent_id="agent-3") == set()


async def test_empty_string_matches_records_stored_without_the_field_and_none_matches_any(
    open_index: OpenIndex,
) -> None:
    rng = np.random.default_rng(7)
    index = await open_index()
    q = unit(rng)
    no_user = item(near(q, rng, 0.1), agent_id="agent-1")
    with_user = item(near(q, rng, 0.1), agent_id="agent-1", user_id="u1", session_id="s1")
    no_agent = item(near(q, rng, 0.1), user_id="u1")
    await index.upsert([no_user, with_user, no_agent])

    assert await ids(index, q.tolist(), user_id="") == {no_user.record_id}
    assert await ids(index, q.tolist(), user_id=None) == {
        no_user.record_id,
        with_user.record_id,
        no_agent.record_id,
    }
    assert await ids(index, q.tolist(), agent_id="") == {no_agent.record_id}
    assert await ids(index, q.tolist(), agent_id="agent-1", session_id="") == {no_user.record_id}
    assert await ids(index, q.tolist(), session_id="s1") == {with_user.record_id}


async def test_kinds_filter_keeps_only_those_kinds(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(8)
    index = await open_index()
    q = unit(rng)
    by_kind = {kind: item(near(q, rng, 0.2), kind=kind) for kind in Kind}
    await index.upsert(list(by_kind.values()))

    wanted = frozenset({Kind.DECISION, Kind.PREFERENCE})
    assert await ids(index, q.tolist(), kinds=wanted) == {by_kind[k].record_id for k in wanted}
    assert await ids(index, q.tolist(), kinds=frozenset()) == {
        i.record_id for i in by_kind.values()
    }


async def test_current_only_hides_closed_records_and_set_validity_closes_and_reopens(
    open_index: OpenIndex,
) -> None:
    rng = np.random.default_rng(9)
    index = await open_index()
    q = unit(rng)
    open_ = item(near(q, rng, 0.1))
    closed = item(near(q, rng, 0.1), valid_to=T0 + hours(1))
    later = item(near(q, rng, 0.1))
    await index.upsert([open_, closed, later])

    assert await ids(index, q.tolist(), current_only=True) == {open_.record_id, later.record_id}

    await index.set_validity([later.record_id], valid_to=T0 + hours(2))
    assert await ids(index, q.tolist(), current_only=True) == {open_.record_id}
    assert await ids(index, q.tolist(), current_only=False) == {
        open_.record_id,
        closed.record_id,
        later.record_id,
    }

    await index.set_validity([closed.record_id, later.record_id], valid_to=None)
    assert await ids(index, q.tolist(), current_only=True) == {
        open_.record_id,
        closed.record_id,
        later.record_id,
    }


async def test_set_validity_of_unknown_records_is_a_no_op(open_index: OpenIndex) -> None:
    index = await open_index()
    await index.set_validity(["0b6f3c1e-8c1a-4a55-9a43-3f1d1b0c6a11"], valid_to=T0)
    await index.set_validity([], valid_to=T0)


async def test_as_of_keeps_records_valid_at_that_moment(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(10)
    index = await open_index()
    q = unit(rng)
    old = item(near(q, rng, 0.1), valid_from=T0, valid_to=T0 + hours(10))
    new = item(near(q, rng, 0.1), valid_from=T0 + hours(10))
    future = item(near(q, rng, 0.1), valid_from=T0 + hours(20))
    await index.upsert([old, new, future])

    def at(h: float) -> datetime:
        return T0 + hours(h)

    assert await ids(index, q.tolist(), as_of=at(-1)) == set()
    assert await ids(index, q.tolist(), as_of=at(0)) == {old.record_id}  # valid_from <= t
    assert await ids(index, q.tolist(), as_of=at(9.99)) == {old.record_id}
    assert await ids(index, q.tolist(), as_of=at(10)) == {new.record_id}  # t < valid_to
    assert await ids(index, q.tolist(), as_of=at(25)) == {new.record_id, future.record_id}
    # as_of and current_only together: valid then and still open now.
    assert await ids(index, q.tolist(), as_of=at(5), current_only=True) == set()
    assert await ids(index, q.tolist(), as_of=at(15), current_only=True) == {new.record_id}


async def test_delete_removes_vectors_for_good(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(11)
    index = await open_index()
    q = unit(rng)
    items = [item(near(q, rng, 0.1)) for _ in range(5)]
    await index.upsert(items)

    await index.delete([items[0].record_id, items[3].record_id, items[3].record_id])
    await index.delete([])

    assert await ids(index, q.tolist()) == {items[i].record_id for i in (1, 2, 4)}


async def test_limit_is_respected(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(12)
    index = await open_index()
    await index.upsert([item(unit(rng)) for _ in range(30)])
    q = unit(rng).tolist()

    assert len(await index.search(q, where=ACME, limit=7)) == 7
    assert len(await index.search(q, where=ACME, limit=1)) == 1
    assert await index.search(q, where=ACME, limit=0) == []
    assert len(await index.search(q, where=ACME, limit=500)) == 30


async def test_a_very_selective_filter_still_returns_limit_matches(open_index: OpenIndex) -> None:
    # 1,500 vectors crowd around the query; the dozen that pass the filter lie
    # far away, beyond anything a plain HNSW walk with ef_search=10 would see.
    rng = np.random.default_rng(13)
    index = await open_index(hnsw_ef_search=10)
    q = unit(rng)
    crowd = [item(near(q, rng, 0.3), kind=Kind.FACT) for _ in range(1500)]
    rare = [item(unit(rng), kind=Kind.DECISION) for _ in range(12)]
    closed = [item(near(q, rng, 0.3), valid_to=T0 + hours(1)) for _ in range(300)]
    for start in range(0, 1500, 500):
        await index.upsert(crowd[start : start + 500])
    await index.upsert([*rare, *closed])
    await open_index.settle()

    decisions = await index.search(
        q.tolist(), where=VectorFilter("acme", kinds=frozenset({Kind.DECISION})), limit=10
    )
    assert len(decisions) == 10
    assert {h.record_id for h in decisions} <= {r.record_id for r in rare}

    # The other way round: current_only keeps the crowd and drops the closed.
    current = await index.search(q.tolist(), where=VectorFilter("acme"), limit=50)
    assert len(current) == 50
    assert not {h.record_id for h in current} & {c.record_id for c in closed}


async def test_a_vector_of_the_wrong_dimension_is_refused(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(14)
    index = await open_index()
    assert index.dimension == DIM

    with pytest.raises(InvalidArgument, match="dimensions"):
        await index.search(unit(rng, DIM + 1).tolist(), where=ACME, limit=3)
    with pytest.raises(InvalidArgument, match="dimensions"):
        await index.upsert([item(unit(rng)), item(unit(rng, DIM - 1))])
    assert await index.search(unit(rng).tolist(), where=ACME, limit=3) == []


async def test_reopening_the_index_with_another_dimension_is_refused(
    open_index: OpenIndex,
) -> None:
    rng = np.random.default_rng(15)
    index = await open_index()
    await index.upsert([item(unit(rng))])

    with pytest.raises(InvalidArgument, match=f"{DIM}-dimension vectors"):
        await open_index(dimension=DIM * 2)
    again = await open_index(dimension=DIM)
    assert len(await again.search(unit(rng).tolist(), where=ACME, limit=3)) == 1


async def test_bad_ids_naive_datetimes_and_a_missing_tenant_are_invalid_arguments(
    open_index: OpenIndex,
) -> None:
    rng = np.random.default_rng(16)
    index = await open_index()
    v = unit(rng)

    with pytest.raises(InvalidArgument, match="not a UUID"):
        await index.upsert([item(v, record_id="record-1")])
    with pytest.raises(InvalidArgument, match="not a UUID"):
        await index.delete(["record-1"])
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        await index.upsert([item(v, valid_from=datetime(2025, 1, 1))])
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        await index.search(
            v.tolist(), where=VectorFilter("acme", as_of=datetime(2025, 1, 1)), limit=1
        )
    with pytest.raises(InvalidArgument, match="tenant"):
        await index.search(v.tolist(), where=VectorFilter(""), limit=1)
    with pytest.raises(InvalidArgument, match="limit"):
        await index.search(v.tolist(), where=ACME, limit=-1)
    assert len(v) == DIM
