"""Benchmark: the local embedder (all-MiniLM-L6-v2 on onnxruntime), as the service calls it.

Figures, all through ``await LocalEmbedder.embed(...)`` (tokenise, hop to the
worker thread, infer, hop back), on this machine's cores:

* ``load_s``: ``await embedder.load()`` from nothing: read the weights, build the
  ONNX graph, create the session, one warm-up run.
* ``query_p50_ms`` / ``query_p95_ms``: one short text per call (3-8 words, 200
  different texts, back to back after a warm-up), the shape of a Recall query.
* ``batch_texts_per_s``: calls of 64 sentences of ~15 words, the shape of a
  bulk write; median over rounds.
* ``numpy_reference_query_ms``: the same short queries through the plain numpy
  forward pass (``_minilm_reference``), median, for comparison. It runs after
  the embedders are closed: onnxruntime's spinning pool threads and numpy's BLAS
  threads slow each other down badly when they share two cores.
* ``query_p50_ms_without_spinning`` / ``..._p95_...``: the same queries with the
  pool threads sleeping between steps (``spinning=False``).
* ``idle_cpu_ms_after_query``: CPU time the process burns in the 200 ms after a
  lone query, spinning (the default) and not: the price of the lower latency.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import time

import numpy as np
import onnxruntime as ort

from mainstay_memory.store._minilm import load_tokenizer, load_weights, model_dir, read_config
from mainstay_memory.store._minilm_reference import ReferenceMiniLM
from mainstay_memory.store.embedding_local import LocalEmbedder

_WHO = ["the user", "agent 7", "Alice", "my manager", "the billing bot", "our customer"]
_DOES = ["prefers", "asked about", "forgot", "lives near", "wants", "complained about"]
_WHAT = ["green tea", "the refund", "Paris", "the deploy window", "Friday's report", "dark mode"]
_TAIL = [
    "",
    " yesterday",
    " last week",
    " again",
    " every morning",
    " before the meeting",
    " after lunch",
]


def short_queries(count: int) -> list[str]:
    """Distinct 3-8 word queries, like the ones a Recall embeds."""
    combos = itertools.product(_WHO, _DOES, _WHAT, _TAIL)
    return [
        f"{who} {does} {what}{tail}" for who, does, what, tail in itertools.islice(combos, count)
    ]


def sentences(count: int, offset: int) -> list[str]:
    """Distinct ~15-word sentences, like memories being written."""
    out = []
    for i in range(offset, offset + count):
        who, does, what = _WHO[i % 6], _DOES[(i // 6) % 6], _WHAT[(i // 36) % 6]
        out.append(
            f"On day {i} {who} {does} {what} and then wrote a short note about it for the team."
        )
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def time_queries(embedder: LocalEmbedder, queries: list[str]) -> list[float]:
    for text in queries[:20]:
        await embedder.embed([text])
    latencies = []
    for text in queries:
        start = time.perf_counter()
        await embedder.embed([text])
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


async def idle_cpu_after_query(embedder: LocalEmbedder, rounds: int = 5) -> float:
    burned = []
    for i in range(rounds):
        await asyncio.sleep(0.3)  # let any earlier spinning stop
        await embedder.embed([f"a lone query number {i}"])
        before = time.process_time()
        await asyncio.sleep(0.2)
        burned.append((time.process_time() - before) * 1000)
    return statistics.median(burned)


async def measure_spinning(queries: list[str], batch_rounds: int) -> dict[str, float]:
    embedder = LocalEmbedder(batch_size=64)
    start = time.perf_counter()
    await embedder.load()
    load_s = time.perf_counter() - start
    latencies = await time_queries(embedder, queries)

    await embedder.embed(sentences(64, offset=10_000))  # warm-up at this shape
    rates = []
    for round_ in range(batch_rounds):
        batch = sentences(64, offset=round_ * 64)
        start = time.perf_counter()
        await embedder.embed(batch)
        rates.append(len(batch) / (time.perf_counter() - start))
    idle_cpu = await idle_cpu_after_query(embedder)
    await embedder.aclose()
    return {
        "load_s": round(load_s, 3),
        "query_p50_ms": round(percentile(latencies, 50), 3),
        "query_p95_ms": round(percentile(latencies, 95), 3),
        "batch_texts_per_s": round(statistics.median(rates), 1),
        "threads": embedder.threads,
        "idle_cpu_ms_after_query": round(idle_cpu, 1),
    }


async def measure_without_spinning(queries: list[str]) -> dict[str, float]:
    async with LocalEmbedder(spinning=False) as embedder:
        latencies = await time_queries(embedder, queries)
        idle_cpu = await idle_cpu_after_query(embedder)
    return {
        "query_p50_ms_without_spinning": round(percentile(latencies, 50), 3),
        "query_p95_ms_without_spinning": round(percentile(latencies, 95), 3),
        "idle_cpu_ms_after_query_without_spinning": round(idle_cpu, 1),
    }


def measure_reference(queries: list[str]) -> float:
    directory = model_dir()
    config = read_config(directory)
    tokenizer = load_tokenizer(directory, config)
    reference = ReferenceMiniLM(load_weights(directory, config), config)
    latencies = []
    for i, text in enumerate(queries):
        start = time.perf_counter()
        encoding = tokenizer.encode(text)
        reference.embed(np.array([encoding.ids]), np.array([encoding.attention_mask]))
        if i >= 5:  # the first calls warm numpy's BLAS threads up
            latencies.append((time.perf_counter() - start) * 1000)
    return statistics.median(latencies)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch-rounds", type=int, default=6)
    args = parser.parse_args()
    queries = short_queries(args.queries)

    result: dict[str, object] = {}
    result |= await measure_spinning(queries, args.batch_rounds)
    print(f"spinning (default): {result}")
    without = await measure_without_spinning(queries)
    print(f"without spinning: {without}")
    reference_ms = measure_reference(queries[: min(60, len(queries))])
    print(f"numpy reference: {reference_ms:.2f} ms per short query")
    result |= {"numpy_reference_query_ms": round(reference_ms, 3)}
    result |= without
    result |= {"onnxruntime": ort.__version__, "machine": platform.machine()}
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
