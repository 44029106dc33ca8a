"""The graph's vLLM version and vLLM's own OpenAI server, started with the same flags on the same weights, give the
same content for the same request at temperature 0 (ids, timestamps and fingerprints aside)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import load_config
from app.engines.vllm_chat import cpu_environment, vllm_argv
from app.serving.adapters import adapter_ref
from tests.e2e.conftest import default_args
from tests.e2e.test_default_graph import CHAT_MODEL, ON_VLLM, QUESTION
from tests.e2e.test_vllm_surface import ASK_WEATHER, WEATHER
from tests.eventually import HTTP_RETRIED, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def vllm_server_like(label: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` with the flags version `label` of the default graph's chat model
    runs with, and the adapters on that version as `--lora-modules`, under the names clients send."""
    config = load_config(default_args())
    model = config.model(CHAT_MODEL)
    assert model is not None
    version = model.version(label)
    argv = vllm_argv(
        Path(version.weights.local_path(config.resolved_weights_dir())),
        CHAT_MODEL,
        version.vllm,
        max_model_len=version.max_model_len,
        gpu_memory_utilization=version.gpu_memory_utilization,
        chat_template=version.vllm.chat_template_path(),
        lora=version.lora,
    )
    weights_dir = config.resolved_weights_dir()
    on_it = [
        adapter_ref(m, v, weights_dir)
        for m in config.models
        for v in m.versions
        if v.adapter and config.base_of(m, v)[1] is version
    ]
    if on_it:
        argv += ["--lora-modules", *(f"{ref.model}={ref.path}" for ref in on_it)]
    port = _free_port()
    log = (tmp_path_factory.mktemp("vllm") / "server.log").open("w")
    env = {**os.environ, **cpu_environment(version.vllm.kv_cache_space_gb)}
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *argv, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> None:
            if process.poll() is not None:
                pytest.fail(f"vLLM's server exited; see {log.name}")  # not retried: it will not start now
            assert httpx.get(f"{base}/health", timeout=2).status_code == 200

        started = f"vLLM's server to start (see {log.name})"
        eventually(healthy, what=started, timeout_s=300, interval_s=1, retry_on=HTTP_RETRIED)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's own server as the stable version (v1) runs."""
    with vllm_server_like("v1", tmp_path_factory) as base:
        yield base


def _content(body: dict[str, Any]) -> Any:
    """A response without what differs by construction between two servers: ids, timestamps, fingerprints."""
    choices = []
    for choice in body["choices"]:
        choice = dict(choice)
        message = dict(choice.get("message") or {})
        message["tool_calls"] = [
            {**call, "id": None} for call in message.get("tool_calls") or []
        ]  # tool call ids are random
        choice["message"] = message
        choices.append(choice)
    return {"choices": choices, "usage": body.get("usage"), "model": body["model"], "object": body["object"]}


FEATURES: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("/v1/chat/completions", {"messages": QUESTION, "max_tokens": 16}),
    "tools-required": (
        "/v1/chat/completions",
        {"messages": ASK_WEATHER, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 40},
    ),
    "tools-named": (
        "/v1/chat/completions",
        {
            "messages": ASK_WEATHER,
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "max_tokens": 40,
        },
    ),
    "json-schema": (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "Name a city and its country."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
                        "required": ["name", "country"],
                    },
                },
            },
            "max_tokens": 40,
        },
    ),
    "logprobs": ("/v1/chat/completions", {"messages": QUESTION, "logprobs": True, "top_logprobs": 2, "max_tokens": 4}),
    "n-seeded": (
        "/v1/chat/completions",
        {"messages": QUESTION, "n": 2, "temperature": 0.8, "seed": 3, "max_tokens": 6},
    ),
    "vllm-params": (
        "/v1/chat/completions",
        {"messages": QUESTION, "max_tokens": 8, "ignore_eos": True, "top_k": 3, "repetition_penalty": 1.2},
    ),
    "completions-two-prompts": ("/v1/completions", {"prompt": ["Hello, my name is", "Paris is"], "max_tokens": 5}),
    "completions-token-ids": ("/v1/completions", {"prompt": [504, 3575, 282, 4649, 314], "max_tokens": 5}),
    "completions-echo-logprobs": (
        "/v1/completions",
        {"prompt": "The sky is", "echo": True, "logprobs": 1, "max_tokens": 3},
    ),
}


@pytest.mark.parametrize("feature", list(FEATURES))
def test_the_graph_answers_what_vllm_answers(default_graph: str, vllm_server: str, feature: str) -> None:
    path, fields = FEATURES[feature]
    body = {"model": CHAT_MODEL, "temperature": 0, **fields}
    ours = httpx.post(f"{default_graph}{path}", json=body, headers=ON_VLLM, timeout=120)
    theirs = httpx.post(f"{vllm_server}{path}", json=body, timeout=120)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.headers["x-served-by"] == f"{CHAT_MODEL}@v1"
    assert _content(ours.json()) == _content(theirs.json())
