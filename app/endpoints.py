"""The model endpoints: path, request schema, the role of model that serves it, and the replica method."""

from __future__ import annotations

from enum import Enum

from app.config import Role
from app.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelRequest, RerankRequest


class Endpoint(Enum):
    CHAT = ("/v1/chat/completions", ChatCompletionRequest, Role.CHAT)
    COMPLETION = ("/v1/completions", CompletionRequest, Role.CHAT)
    EMBEDDING = ("/v1/embeddings", EmbeddingRequest, Role.EMBEDDING)
    RERANK = ("/v1/rerank", RerankRequest, Role.RERANK)

    def __init__(self, path: str, schema: type[ModelRequest], role: Role) -> None:
        self.path = path
        self.schema = schema
        self.role = role

    @classmethod
    def for_path(cls, path: str) -> Endpoint | None:
        wanted = _ALIASES.get(path.rstrip("/"), path.rstrip("/"))
        return next((e for e in cls if e.path == wanted), None)

    @property
    def generates(self) -> bool:
        return self.role is Role.CHAT

    @property
    def method(self) -> str:
        """The replica method that serves it (a generating endpoint streams through `stream`)."""
        return {Role.CHAT: "create", Role.EMBEDDING: "embed", Role.RERANK: "rerank"}[self.role]


# vLLM serves rerank at all three paths; Cohere's v2 client posts to /v2/rerank (the body is the same).
_ALIASES = {"/v2/rerank": Endpoint.RERANK.path, "/rerank": Endpoint.RERANK.path}
