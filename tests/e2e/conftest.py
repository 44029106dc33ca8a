from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.serve.conftest import wait_ready

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "inference-graph"


def default_args() -> dict:
    (app,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    return dict(app["args"])


@pytest.fixture(scope="package")
def default_graph(ray_cluster: str) -> Iterator[str]:
    """The default serve_config.yaml (vLLM + real SmolLM2 and MiniLM weights) on the session's cluster."""
    from ray import serve

    from deployments.graph import build_app

    serve.run(build_app(default_args()), name=APP_NAME, route_prefix="/")
    wait_ready(ray_cluster, timeout_s=600)
    try:
        yield ray_cluster
    finally:
        serve.delete(APP_NAME)
