"""The local embedder as the memory service sees it: similar texts close, rules kept."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import pytest

from mainstay_common.errors import InvalidArgument
from mainstay_memory.store.embedding_local import LocalEmbedder

if TYPE_CHECKING:
    from mainstay_memory.domain.ports import Embedder


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


TEXTS = [
    "I live in Paris",
    "My home is in Paris",
    "The quarterly report is due on Friday.",
    "The user prefers green tea in the morning.",
    "Agent 7 escalated the refund request to a human.",
    "ok",
    "Le chat est sur la table.",
    "Remember: the deploy window is 14:00-16:00 UTC, never on Fridays!",
    "Bob's favourite programming language is Rust, and he dislikes YAML.",
    "A very long sentence " + "that keeps going and going " * 12,
]


async def test_it_is_an_embedder_of_384_dimensions(local_embedder: LocalEmbedder) -> None:
    embedder: Embedder = local_embedder
    assert embedder.dimension == 384
    assert embedder.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    [vector] = await embedder.embed(["hello"])
    assert len(vector) == 384
    assert all(isinstance(x, float) for x in vector)


async def test_vectors_are_unit_length(local_embedder: LocalEmbedder) -> None:
    for vector in await local_embedder.embed(TEXTS):
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-5)


async def test_identical_texts_have_similarity_one(local_embedder: LocalEmbedder) -> None:
    a, b = await local_embedder.embed(["The user lives in Paris.", "The user lives in Paris."])
    assert cosine(a, b) == pytest.approx(1.0, abs=1e-5)


async def test_paraphrases_are_closer_than_unrelated_sentences(
    local_embedder: LocalEmbedder,
) -> None:
    paris, home, report, tea = await local_embedder.embed(
        ["I live in Paris", "My home is in Paris", TEXTS[2], TEXTS[3]]
    )
    paraphrase = cosine(paris, home)
    assert paraphrase > 0.7
    for unrelated in (cosine(paris, report), cosine(home, report), cosine(paris, tea)):
        assert paraphrase > unrelated + 0.4


async def test_a_batch_gives_the_vectors_of_single_calls_in_order(
    local_embedder: LocalEmbedder,
) -> None:
    # Ten texts of mixed lengths span several runs (batch_size 4), regrouped by length.
    batched = await local_embedder.embed(TEXTS)
    for text, vector in zip(TEXTS, batched, strict=True):
        [single] = await local_embedder.embed([text])
        assert vector == pytest.approx(single, abs=1e-5)


async def test_concurrent_calls_get_their_own_vectors(local_embedder: LocalEmbedder) -> None:
    expected = await local_embedder.embed(TEXTS)
    results = await asyncio.gather(*(local_embedder.embed([text]) for text in TEXTS))
    for [vector], want in zip(results, expected, strict=True):
        assert vector == pytest.approx(want, abs=1e-5)


async def test_an_empty_list_gives_an_empty_list() -> None:
    # Nothing to embed: a fresh (never loaded) embedder answers at once.
    embedder = LocalEmbedder()
    assert await embedder.embed([]) == []
    await embedder.aclose()


async def test_a_text_past_256_tokens_is_truncated_not_rejected(
    local_embedder: LocalEmbedder,
) -> None:
    long_text = "The agent wrote a very detailed incident report. " * 200  # ~2000 tokens
    longer, shorter, short = await local_embedder.embed(
        [long_text + " And then something entirely different happened.", long_text, "incident"]
    )
    # Both are cut at the same 256 tokens, so what follows the cut cannot matter.
    assert cosine(longer, shorter) == pytest.approx(1.0, abs=1e-5)
    assert math.sqrt(sum(x * x for x in longer)) == pytest.approx(1.0, abs=1e-5)
    assert cosine(longer, short) < 0.99


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
async def test_an_empty_text_is_refused_naming_its_position(
    local_embedder: LocalEmbedder, blank: str
) -> None:
    with pytest.raises(InvalidArgument, match=r"empty text: texts\[1\] is empty"):
        await local_embedder.embed(["fine", blank])


async def test_a_bare_string_is_refused(local_embedder: LocalEmbedder) -> None:
    with pytest.raises(TypeError, match="not a single str"):
        await local_embedder.embed("hello")


async def test_embedding_does_not_block_the_event_loop(local_embedder: LocalEmbedder) -> None:
    # Were inference run on the loop, the task would finish within its first step
    # and this loop would never get a turn while it runs.
    task = asyncio.create_task(local_embedder.embed(TEXTS * 6))
    turns = 0
    while not task.done():
        await asyncio.sleep(0.001)
        turns += 1
    assert len(await task) == len(TEXTS) * 6
    assert turns > 1


async def test_a_closed_embedder_refuses_work() -> None:
    embedder = LocalEmbedder()
    await embedder.aclose()
    await embedder.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await embedder.embed(["too late"])


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        LocalEmbedder(batch_size=0)
    with pytest.raises(ValueError, match="threads"):
        LocalEmbedder(threads=-1)
    assert LocalEmbedder(threads=1).threads == 1
    assert LocalEmbedder().threads >= 1
