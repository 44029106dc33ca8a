"""Embeddings and rerank through the graph on a tiny sentence-transformers model, batched by @serve.batch."""

from __future__ import annotations

import base64
import concurrent.futures

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)


def post(base: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=60)


def test_embeddings_float_and_base64(graph: str) -> None:
    plain = post(graph, "/v1/embeddings", {"model": "tiny-embed", "input": ["a cat", "a dog"]}).json()
    packed = post(
        graph, "/v1/embeddings", {"model": "tiny-embed", "input": ["a cat", "a dog"], "encoding_format": "base64"}
    ).json()
    assert plain["object"] == "list" and [d["index"] for d in plain["data"]] == [0, 1]
    vectors = np.array([d["embedding"] for d in plain["data"]])
    assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]])
    assert np.allclose(decoded, vectors, atol=1e-6)
    assert plain["usage"]["prompt_tokens"] > 0


def test_rerank_shape(graph: str) -> None:
    docs = ["alpha", "beta gamma", "delta"]
    body = post(graph, "/v1/rerank", {"model": "tiny-rerank", "query": "beta", "documents": docs, "top_n": 2}).json()
    assert len(body["results"]) == 2
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert {r["index"] for r in body["results"]} <= {0, 1, 2}


def test_concurrent_requests_are_batched(graph: str) -> None:
    from ray import serve

    def embed(i: int) -> int:
        return post(graph, "/v1/embeddings", {"model": "tiny-embed", "input": f"sentence number {i}"}).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert list(pool.map(embed, range(32))) == [200] * 32
    handle = serve.get_deployment_handle("embedding-tiny-embed-v1", app_name="tiny-graph")
    sizes = handle.recent_batch_sizes.remote().result(timeout_s=30)
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 16
