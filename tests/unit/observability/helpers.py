"""What several of the observability tests use: a settable clock, a chat request and its one-token answer, a graph
config, and promtool on the committed Prometheus files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from app.config import GraphConfig, load_config
from app.protocol import AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse, Usage

ROOT = Path(__file__).resolve().parents[3]
OBS = ROOT / "observability"
PROMTOOL = shutil.which("promtool")


def chat_body(**extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    )


def paris_reply(response_id: str, prompt_tokens: int) -> ChatCompletionResponse:
    """A one-token chat answer, "Paris"."""
    return ChatCompletionResponse(
        id=response_id,
        created=1,
        model="m",
        choices=[ChatChoice(message=AssistantMessage(content="Paris"), finish_reason="stop")],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=1, total_tokens=prompt_tokens + 1),
    )


def config(**extra: Any) -> GraphConfig:
    version = {"engine": "transformers", "weights": {"path": str(ROOT)}}
    return load_config(
        {
            "models": [
                {"name": "m", "role": "chat", "versions": [{"version": "v1", **version}, {"version": "v2", **version}]}
            ],
            **extra,
        }
    )


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool run in observability/prometheus (relative paths are the committed files there)."""
    assert PROMTOOL is not None, "promtool is not installed (`make test` installs it: scripts/system-packages.sh)"
    return subprocess.run([PROMTOOL, *args], cwd=OBS / "prometheus", capture_output=True, text=True, timeout=120)
