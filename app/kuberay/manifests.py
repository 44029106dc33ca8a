"""Every manifest of `kuberay/`, rendered from a serve config, and the YAML files they are written as; never edited by
hand. `tests/unit/kuberay/test_manifests.py` fails when a committed manifest differs from a fresh render."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from app.kuberay.groups import GroupPlan, plan
from app.kuberay.options import RenderOptions
from app.kuberay.pods import BATCH, GPU_RESOURCE, REALTIME, head_group, resources, worker_group
from app.kuberay.profile import ServeProfile, load_profile

Manifest = dict[str, Any]


def render(profile: ServeProfile, options: RenderOptions) -> dict[str, list[Manifest]]:
    """Every manifest file of `kuberay/`, by file name, as its documents."""
    groups = plan(profile.graph, options.gpu_pools)
    max_gpus = sum(g.max_pods * g.pool.gpus_per_pod for g in groups)
    return {
        "namespace.yaml": [_doc("v1", "Namespace", options.namespace, options)],
        "priorityclasses.yaml": [
            {
                **_doc("scheduling.k8s.io/v1", "PriorityClass", REALTIME, options),
                "value": 100000,
                "preemptionPolicy": "PreemptLowerPriority",
                "globalDefault": False,
                "description": "Online inference: the graph's head and GPU workers; may preempt batch pods.",
            },
            {
                **_doc("scheduling.k8s.io/v1", "PriorityClass", BATCH, options),
                "value": 1000,
                "preemptionPolicy": "Never",
                "globalDefault": False,
                "description": "Offline and batch inference: waits for free GPUs, never preempts.",
            },
        ],
        "resourcequota.yaml": [
            {
                **_doc("v1", "ResourceQuota", "gpu", options),
                # NewCluster upgrades run a second, full cluster until the switch: twice the GPUs.
                "spec": {"hard": {f"requests.{GPU_RESOURCE}": str(2 * max_gpus)}},
            }
        ],
        "model-cache.yaml": [_model_cache(options)],
        "rayservice.yaml": [_rayservice(profile, options, groups)],
        "business-service.yaml": [_business_service(options)],
        "podmonitor.yaml": [_podmonitor(options)],
        "kustomization.yaml": [
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": options.namespace,
                "resources": [
                    "namespace.yaml",
                    "priorityclasses.yaml",
                    "resourcequota.yaml",
                    "model-cache.yaml",
                    "rayservice.yaml",
                    "business-service.yaml",
                    "podmonitor.yaml",
                ],
            }
        ],
    }


def _doc(api_version: str, kind: str, name: str, options: RenderOptions) -> Manifest:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": options.labels}}


def _model_cache(options: RenderOptions) -> Manifest:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],  # shared by every worker pod, of both clusters during an upgrade
        "resources": {"requests": {"storage": options.model_cache_size}},
    }
    if options.model_cache_storage_class:
        spec["storageClassName"] = options.model_cache_storage_class
    return {**_doc("v1", "PersistentVolumeClaim", "model-cache", options), "spec": spec}


def _rayservice(profile: ServeProfile, options: RenderOptions, groups: Sequence[GroupPlan]) -> Manifest:
    return {
        **_doc("ray.io/v1", "RayService", options.name, options),
        "spec": {
            # Cluster changes (image, Ray, pod templates) build a full new cluster and switch when it serves;
            # serveConfigV2 changes (model rollouts, canary weights) update the running cluster in place.
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterDeletionDelaySeconds": 120,
            "excludeHeadPodFromServeSvc": False,  # the business Service relies on the head's ray.io/serve label
            "serveConfigV2": yaml.safe_dump(profile.document, sort_keys=False, width=1000),
            "rayClusterConfig": {
                "rayVersion": options.ray_version,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": "Default",
                    "idleTimeoutSeconds": 600,
                    "resources": resources({"cpu": "500m", "memory": "512Mi"}),
                },
                "headGroupSpec": head_group(profile, options),
                "workerGroupSpecs": [worker_group(profile, options, g) for g in groups],
            },
        },
    }


def _business_service(options: RenderOptions) -> Manifest:
    return {
        **_doc("v1", "Service", f"{options.name}-business", options),
        "spec": {
            # ray.io/serve=true: KubeRay sets it on the head only once the head's Serve proxy is healthy.
            "selector": {**options.labels, "ray.io/node-type": "head", "ray.io/serve": "true"},
            "ports": [{"name": "http", "port": 80, "targetPort": "business"}],
        },
    }


def _podmonitor(options: RenderOptions) -> Manifest:
    return {
        **_doc("monitoring.coreos.com/v1", "PodMonitor", f"{options.name}-ray", options),
        "spec": {
            "selector": {"matchLabels": {**options.labels, "ray.io/is-ray-node": "yes"}},
            "podMetricsEndpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
                            "targetLabel": "ray_io_cluster",
                        },
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_node_type"],
                            "targetLabel": "ray_node_type",
                        },
                    ],
                }
            ],
        },
    }


# --- files ---------------------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as block scalars."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def to_yaml(documents: Sequence[Manifest], source: str) -> str:
    header = f"# Generated from {source} by `python -m app.kuberay render`; do not edit by hand.\n"
    return header + yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=1000)


def render_files(config_path: Path, options: RenderOptions | None = None) -> dict[str, str]:
    profile = load_profile(config_path)
    return {name: to_yaml(docs, profile.source) for name, docs in render(profile, options or RenderOptions()).items()}
