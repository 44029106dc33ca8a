"""The serve config that the manifests deploy, checked for what a cluster needs beyond `app.config`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.config import GRAPH_IMPORT_PATH, GraphConfig, load_config


class ProfileError(ValueError):
    """A serve config that KubeRay cannot deploy as it stands."""


@dataclass(frozen=True)
class ServeProfile:
    """A serve config that KubeRay can deploy: one graph application, served on 0.0.0.0."""

    source: str  # the config file's name, for the generated files' header
    document: dict[str, Any]
    graph: GraphConfig
    port: int
    route_prefix: str

    @property
    def endpoint(self) -> str:
        return f"http://localhost:{self.port}{self.route_prefix}/v1"

    @property
    def ready_path(self) -> str:
        return f"{self.route_prefix}/ready"


def load_profile(path: Path) -> ServeProfile:
    document = yaml.safe_load(path.read_text())
    apps = document.get("applications") or []
    if len(apps) != 1 or apps[0].get("import_path") != GRAPH_IMPORT_PATH:
        raise ProfileError(f"{path}: expected one application with import_path {GRAPH_IMPORT_PATH}")
    http = document.get("http_options") or {}
    if http.get("host") != "0.0.0.0":
        raise ProfileError(f"{path}: http_options.host must be 0.0.0.0 so probes and Services reach the proxy")
    graph = load_config(apps[0].get("args") or {})
    local = [f"{m.name}@{v.version}" for m in graph.models for v in m.versions if v.weights.hub is None]
    if graph.verify_weights and local:
        raise ProfileError(
            f"{path}: {local} load weights from a local folder or package, which cluster nodes do not have; use hub "
            "weights, or bake them into the image and set verify_weights: false"
        )
    return ServeProfile(
        path.name, document, graph, int(http.get("port", 8000)), str(apps[0].get("route_prefix", "/")).rstrip("/")
    )
