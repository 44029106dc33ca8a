"""The committed manifests of `kuberay/`, read back: the tests check these files, not a render held in memory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.config import GraphConfig, load_config

ROOT = Path(__file__).resolve().parents[3]
KUBERAY = ROOT / "kuberay"
GPU_PROFILE = ROOT / "serve_config.gpu.yaml"
GPU = "nvidia.com/gpu"

Doc = dict[str, Any]


def manifests() -> dict[str, list[Doc]]:
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted(KUBERAY.glob("*.yaml"))}


def rayservice() -> Doc:
    (doc,) = manifests()["rayservice.yaml"]
    return doc


def cluster() -> Doc:
    spec: Doc = rayservice()["spec"]["rayClusterConfig"]
    return spec


def pod_templates() -> list[Doc]:
    return [cluster()["headGroupSpec"]["template"]] + [g["template"] for g in cluster()["workerGroupSpecs"]]


def containers(template: Doc, *, init: bool = True) -> list[Doc]:
    spec = template["spec"]
    return list(spec["containers"]) + (list(spec.get("initContainers", [])) if init else [])


def container(template: Doc, name: str) -> Doc:
    return next(c for c in containers(template) if c["name"] == name)


def graph() -> GraphConfig:
    serve = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    return load_config(app["args"])


def quantity(value: str | int) -> float:
    found = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert found, value
    number, unit = found.groups()
    scale = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]
    return float(number) * scale
