"""Config documents that the config tests validate: one small chat model, and the serve configs in the repo root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]


def chat_version(**fields: object) -> dict[str, object]:
    """A transformers version `v1` on a folder that exists; `fields` override its fields."""
    return {"version": "v1", "engine": "transformers", "weights": {"path": str(ROOT)}, **fields}


def chat_model(**version: object) -> dict[str, object]:
    """A chat model `m` with one `chat_version(**version)`."""
    return {"name": "m", "role": "chat", "versions": [chat_version(**version)]}


def serve_application(filename: str) -> dict[str, Any]:
    """The one application of a serve config in the repo root."""
    (app,) = yaml.safe_load((ROOT / filename).read_text())["applications"]
    return dict(app)
