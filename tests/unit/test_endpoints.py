"""The model endpoints: which path is which, the rerank aliases, and the replica method each one calls."""

from __future__ import annotations

import pytest

from app.config import Role
from app.endpoints import Endpoint
from app.protocol import ChatCompletionRequest, EmbeddingRequest, RerankRequest


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/v1/chat/completions", Endpoint.CHAT),
        ("/v1/chat/completions/", Endpoint.CHAT),
        ("/v1/completions", Endpoint.COMPLETION),
        ("/v1/embeddings", Endpoint.EMBEDDING),
        ("/v1/rerank", Endpoint.RERANK),
        ("/v2/rerank", Endpoint.RERANK),
        ("/rerank", Endpoint.RERANK),
    ],
)
def test_for_path(path: str, endpoint: Endpoint) -> None:
    assert Endpoint.for_path(path) is endpoint


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat", "/v2/embeddings", "/", ""])
def test_paths_that_are_no_model_endpoint(path: str) -> None:
    assert Endpoint.for_path(path) is None


def test_schema_role_and_method() -> None:
    chat, embedding, rerank = Endpoint.CHAT, Endpoint.EMBEDDING, Endpoint.RERANK
    assert (chat.schema, chat.role, chat.method) == (ChatCompletionRequest, Role.CHAT, "create")
    assert (embedding.schema, embedding.role, embedding.method) == (EmbeddingRequest, Role.EMBEDDING, "embed")
    assert (rerank.schema, rerank.role, rerank.method) == (RerankRequest, Role.RERANK, "rerank")
    assert [e for e in Endpoint if e.generates] == [Endpoint.CHAT, Endpoint.COMPLETION]
