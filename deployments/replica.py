"""The Ray Serve side of a model replica (app/replica.py): the replica's Serve id and the graph's metrics."""

from __future__ import annotations

import time

from ray import serve

from app.config import ModelConfig, ModelVersion
from app.replica import ModelReplica
from deployments.metrics import GraphMetrics


def serve_model_replica(model: ModelConfig, version: ModelVersion) -> ModelReplica:
    """The first call of a model deployment's constructor: the model's load time counts from here."""
    loading_since = time.perf_counter()
    replica_id = serve.get_replica_context().replica_id.unique_id
    return ModelReplica(model, version, replica_id, GraphMetrics(), loading_since=loading_since)
