"""Every metric the graph exports, by name, kind, labels and buckets. `deployments/metrics.py` builds Ray's metric
objects from this list; the Prometheus rules, the Grafana dashboard and the tests use the same names.

Ray exports a custom metric on the node's metrics port as `ray_<name>` (counters also get `_total`; histograms
`_bucket`, `_sum` and `_count`), next to Ray Serve's own `ray_serve_*` metrics, with Ray's labels added (deployment,
replica, application, and the node's). Ray 2.60 rebuilds a histogram's `_sum` from bucket midpoints, so query
histograms by their buckets (quantiles, `_count`); counters are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

RAY_PREFIX = "ray_"


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    producer: str = field(kw_only=True)  # the deployment(s) that record it

    @property
    def exported(self) -> str:
        """The metric family's name on the metrics port (what a PromQL query names, less the sample suffix)."""
        return RAY_PREFIX + self.name

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names a scrape shows for it."""
        if self.kind is Kind.COUNTER:
            return (self.exported + "_total",)
        if self.kind is Kind.HISTOGRAM:
            return tuple(self.exported + s for s in ("_bucket", "_sum", "_count"))
        return (self.exported,)


LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
BATCH_WAIT_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)

REQUEST = ("model", "version", "tier", "route")
INGRESS, CHAT, ENCODER, CONTROLLER = "Ingress", "ChatModel", "Encoder", "RolloutController"

REQUESTS = MetricSpec(
    "inference_graph_requests",
    Kind.COUNTER,
    "Requests answered, by HTTP status (499: the client went away).",
    (*REQUEST, "status"),
    producer=INGRESS,
)
ERRORS = MetricSpec(
    "inference_graph_errors",
    Kind.COUNTER,
    "Requests answered with an error, by status and OpenAI error code.",
    ("model", "version", "route", "status", "code"),
    producer=INGRESS,
)
LATENCY = MetricSpec(
    "inference_graph_request_latency_seconds",
    Kind.HISTOGRAM,
    "End-to-end latency at the ingress: from the request reaching it to the last byte of the answer.",
    (*REQUEST, "status"),
    LATENCY_BUCKETS_S,
    producer=INGRESS,
)
TTFT = MetricSpec(
    "inference_graph_time_to_first_token_seconds",
    Kind.HISTOGRAM,
    "Time to the first generated token, as seen at the ingress.",
    REQUEST,
    LATENCY_BUCKETS_S,
    producer=INGRESS,
)
PROMPT_TOKENS = MetricSpec(
    "inference_graph_prompt_tokens",
    Kind.COUNTER,
    "Prompt (input) tokens of answered requests, counted with the model's own tokenizer.",
    REQUEST,
    producer=INGRESS,
)
COMPLETION_TOKENS = MetricSpec(
    "inference_graph_completion_tokens",
    Kind.COUNTER,
    "Generated (output) tokens; its rate is tokens per second.",
    REQUEST,
    producer=INGRESS,
)
OVERHEAD = MetricSpec(
    "inference_graph_overhead_seconds",
    Kind.HISTOGRAM,
    "The graph's own time per request: end-to-end latency at the ingress less the time inside the engine.",
    ("model", "version", "route"),
    OVERHEAD_BUCKETS_S,
    producer=INGRESS,
)
UPSTREAM = MetricSpec(
    "inference_graph_upstream_requests",
    Kind.COUNTER,
    "Calls from the ingress to a model version, retries included; outcome ok or error (5xx, timeout, dead replica).",
    ("model", "version", "outcome"),
    producer=INGRESS,
)
ROUTE_DECISIONS = MetricSpec(
    "inference_graph_route_decisions",
    Kind.COUNTER,
    "Version choices: reason split (weights), experiment (header) or fallback (breaker open, retry).",
    ("model", "version", "tier", "experiment", "reason"),
    producer=INGRESS,
)
BREAKER_STATE = MetricSpec(
    "inference_graph_breaker_state",
    Kind.GAUGE,
    "Circuit breaker of a version at an ingress replica: 0 closed, 1 half-open, 2 open.",
    ("model", "version"),
    producer=INGRESS,
)
CANARY_WEIGHT = MetricSpec(
    "inference_graph_canary_weight_percent",
    Kind.GAUGE,
    "Traffic share of a rollout's canary version, in %.",
    ("model", "version"),
    producer=CONTROLLER,
)
ROLLOUT_STEP = MetricSpec(
    "inference_graph_rollout_step",
    Kind.GAUGE,
    "Index of the rollout's current step (0 is the first).",
    ("model", "version"),
    producer=CONTROLLER,
)
ROLLOUT_PHASE = MetricSpec(
    "inference_graph_rollout_phase",
    Kind.GAUGE,
    "1 for the rollout's current phase (progressing, paused, promoted, rolled-back, aborted), 0 for the others.",
    ("model", "version", "phase"),
    producer=CONTROLLER,
)
BATCH_SIZE = MetricSpec(
    "inference_graph_batch_size",
    Kind.HISTOGRAM,
    "Requests merged into one batch by @serve.batch.",
    ("model", "version"),
    BATCH_SIZE_BUCKETS,
    producer=f"{CHAT} (transformers engine), {ENCODER}",
)
BATCH_WAIT = MetricSpec(
    "inference_graph_batch_wait_seconds",
    Kind.HISTOGRAM,
    "How long a batch's first request waited for the batch to start (the longest wait in the batch).",
    ("model", "version"),
    BATCH_WAIT_BUCKETS_S,
    producer=f"{CHAT} (transformers engine), {ENCODER}",
)
MODEL_LOAD = MetricSpec(
    "inference_graph_model_load_seconds",
    Kind.GAUGE,
    "How long a replica took to load its model (engine and tokenizer).",
    ("model", "version", "engine"),
    producer=f"{CHAT}, {ENCODER}",
)
MODEL_WARMUP = MetricSpec(
    "inference_graph_model_warmup_seconds",
    Kind.GAUGE,
    "How long a replica's warm-up requests took after loading.",
    ("model", "version"),
    producer=f"{CHAT}, {ENCODER}",
)
QUEUE_DEPTH = MetricSpec(
    "inference_graph_queue_depth",
    Kind.GAUGE,
    "Requests admitted and in flight at an ingress replica, per model and priority class.",
    ("model", "priority"),
    producer=INGRESS,
)
CACHE_LOOKUPS = MetricSpec(
    "inference_graph_cache_lookups",
    Kind.COUNTER,
    "Response cache lookups; result hit or miss.",
    ("model", "version", "route", "result"),
    producer=INGRESS,
)
SHED = MetricSpec(
    "inference_graph_shed_requests",
    Kind.COUNTER,
    "Requests refused by admission control before reaching a model, per priority class.",
    ("model", "route", "priority", "status"),
    producer=INGRESS,
)
PREFIX_ROUTES = MetricSpec(
    "inference_graph_prefix_routes",
    Kind.COUNTER,
    "Requests placed by the prefix-cache router, by reason: prefix (a replica holds the prompt's prefix), "
    "least-loaded (none does), overloaded (the one that does is over the load bound), by-load (the prompt cannot be "
    "read), error (the policy failed; routed by load); target is the version's deployment.",
    ("target", "reason"),
    producer=INGRESS,
)
PREFIX_CACHE_QUERIES = MetricSpec(
    "inference_graph_prefix_cache_queried_tokens",
    Kind.COUNTER,
    "Prompt tokens the engine looked up in its prefix cache (vLLM's own statistics), per replica.",
    ("model", "version"),
    producer=CHAT,
)
PREFIX_CACHE_HITS = MetricSpec(
    "inference_graph_prefix_cache_hit_tokens",
    Kind.COUNTER,
    "Prompt tokens the engine found in its prefix cache (vLLM's own statistics), per replica.",
    ("model", "version"),
    producer=CHAT,
)

METRICS: tuple[MetricSpec, ...] = (
    REQUESTS,
    ERRORS,
    LATENCY,
    TTFT,
    PROMPT_TOKENS,
    COMPLETION_TOKENS,
    OVERHEAD,
    UPSTREAM,
    ROUTE_DECISIONS,
    BREAKER_STATE,
    CANARY_WEIGHT,
    ROLLOUT_STEP,
    ROLLOUT_PHASE,
    BATCH_SIZE,
    BATCH_WAIT,
    MODEL_LOAD,
    MODEL_WARMUP,
    QUEUE_DEPTH,
    CACHE_LOOKUPS,
    SHED,
    PREFIX_ROUTES,
    PREFIX_CACHE_QUERIES,
    PREFIX_CACHE_HITS,
)

BREAKER_VALUES = {"closed": 0.0, "half-open": 1.0, "open": 2.0}
