"""KubeRay manifests for the graph, rendered from a serve config; never edited by hand.

`python -m app.kuberay render --config serve_config.gpu.yaml --out kuberay` writes every manifest of `kuberay/`
(not the Dockerfile); `tests/unit/test_kuberay.py` fails when a committed manifest differs from a fresh render.
The README's Kubernetes section explains the choices; the ones that the code alone would not show:

- The head is CPU-only and hosts no replica (`num-cpus: 0`): it runs the GCS, the Serve controller, a proxy and the
  business container. Every replica, the ingress included, runs on the GPU worker groups, one group per
  accelerator type. `plan` sizes each group by packing the replicas first-fit-decreasing: a tensor-parallel
  replica takes all its GPUs (and its placement group's CPUs) on one pod, fractional replicas share single GPUs.
- KubeRay submits `serveConfigV2` only once the head pod is Ready, and a pod is Ready only when all its containers
  are. A business container whose readiness waited for the graph's `/ready` would therefore keep the graph from
  ever being deployed. Its probe passes while nothing listens on the serve port yet (before the submission) and
  afterwards only when `/ready` answers 200; its Service also requires KubeRay's `ray.io/serve=true` head label,
  which KubeRay sets only once the head's Serve proxy is healthy, so no traffic reaches it before the graph is up.
  The probe runs a static busybox that an init container copies in, so the business image needs no shell tools.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.config import ConfigError, GraphConfig, ModelConfig, ModelVersion, deployment_name, load_config

Manifest = dict[str, Any]

IMPORT_PATH = "deployments.graph:build_app"
METRICS_PORT = 8080  # Ray's metrics export port (rayStartParams metrics-export-port)
DASHBOARD_PORT = 8265
GCS_PORT = 6379
CLIENT_PORT = 10001
AGENT_PORT = 52365  # the dashboard agent: GET /api/healthz checks the raylet (and the GCS on the head)
RAY_PORTS = frozenset({METRICS_PORT, DASHBOARD_PORT, GCS_PORT, CLIENT_PORT, AGENT_PORT})
PROBE_TOOLS = "/probe-tools/busybox"
MODEL_CACHE = "/models"
HF_HOME = f"{MODEL_CACHE}/huggingface"
# Every node runs a Serve proxy: it reaches the ingress over gRPC rather than Ray actor calls (README, results).
PROXY_GRPC = {"name": "RAY_SERVE_PROXY_USE_GRPC", "value": "1"}
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set on GPU nodes by NVIDIA GPU feature discovery
REALTIME, BATCH = "inference-realtime", "inference-batch"
GRACE_S = 120  # terminationGracePeriodSeconds of every pod
BUSINESS_DRAIN_S = 10  # business container: endpoints drop, then SIGTERM
RAY_DRAIN_S = 45  # Ray containers outlive the business container's drain, then `ray stop`
_EPS = 1e-9


class ProfileError(ValueError):
    """A serve config that KubeRay cannot deploy as it stands."""


class PlanError(ValueError):
    """Replicas that do not fit the GPU worker groups."""


@dataclass(frozen=True)
class GpuPool:
    """One GPU worker group: pods on nodes of one accelerator type, each pod taking a whole node."""

    accelerator_type: str  # Ray's name, as in a version's accelerator_type (H100)
    gpu_product: str  # the node label value GPU feature discovery sets (nvidia.com/gpu.product)
    gpus_per_pod: int = 8
    cpus_per_pod: int = 96
    memory_per_pod: str = "960Gi"

    @property
    def group_name(self) -> str:
        return f"gpu-{self.accelerator_type.lower()}"


@dataclass(frozen=True)
class RenderOptions:
    name: str = "inference-graph"
    namespace: str = "inference-graph"
    image: str = "rayproject/ray:2.60.0-py311-gpu"  # must contain this project: see kuberay/Dockerfile
    ray_version: str = "2.60.0"
    business_image: str = "registry.example.com/business-app:1.0.0"
    business_port: int = 9000
    probe_tools_image: str = "busybox:1.37.0-musl"  # statically linked: runs in any business image
    gpu_pools: tuple[GpuPool, ...] = (GpuPool("H100", "NVIDIA-H100-80GB-HBM3"),)
    hf_token_secret: str = "hf-token"  # a Secret with key `token`
    keys_secret: str = "inference-graph-keys"  # a Secret with keys `api-keys` and `admin-keys` (comma-separated)
    model_cache_size: str = "500Gi"
    model_cache_storage_class: str | None = None  # needs ReadWriteMany; None: the cluster's default class
    head_cpus: str = "8"
    head_memory: str = "32Gi"


# --- the serve config ----------------------------------------------------------------------------------------------


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
    if len(apps) != 1 or apps[0].get("import_path") != IMPORT_PATH:
        raise ProfileError(f"{path}: expected one application with import_path {IMPORT_PATH}")
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


# --- GPU plan ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replica:
    """What one Serve replica takes from a node; all of it on the same node."""

    deployment: str
    gpus: float
    cpus: float
    accelerator_type: str | None


def replicas(config: GraphConfig, *, at_max: bool) -> list[Replica]:
    """Every replica of the graph at its fewest (autoscaling minimum) or most (max_replicas)."""
    out = [Replica("ingress", 0.0, config.ingress.num_cpus, None)] * config.ingress.num_replicas
    if any(m.rollout is not None for m in config.models):
        out.append(Replica("rollout-controller", 0.0, 0.05, None))  # as deployments/graph.py binds it
    for model in config.models:
        for version in model.versions:
            low = version.autoscaling.min_replicas if version.autoscaling else version.num_replicas
            out += [_replica(model, version)] * (version.max_replicas if at_max else low)
    return out


def _replica(model: ModelConfig, version: ModelVersion) -> Replica:
    tp = version.vllm.tensor_parallel_size
    # Tensor parallel (deployments/graph.py): a STRICT_PACK placement group of the replica's own CPUs plus one GPU
    # and one CPU per shard, so all of it lands on one node.
    cpus = version.num_cpus + tp if tp > 1 else version.num_cpus
    return Replica(deployment_name(model, version), version.num_gpus, cpus, version.accelerator_type)


@dataclass
class _Pod:
    free_cpus: float
    free_gpus: list[float]

    def take(self, replica: Replica) -> bool:
        if replica.cpus > self.free_cpus + _EPS:
            return False
        if replica.gpus >= 1:
            idle = [i for i, free in enumerate(self.free_gpus) if free >= 1 - _EPS]
            if len(idle) < int(replica.gpus):
                return False
            for i in idle[: int(replica.gpus)]:
                self.free_gpus[i] = 0.0
        elif replica.gpus > 0:
            fits = [i for i, free in enumerate(self.free_gpus) if free >= replica.gpus - _EPS]
            if not fits:
                return False
            fullest = min(fits, key=lambda i: self.free_gpus[i])  # keeps whole GPUs for tensor-parallel replicas
            self.free_gpus[fullest] -= replica.gpus
        self.free_cpus -= replica.cpus
        return True


def pods_needed(demand: Sequence[Replica], pool: GpuPool) -> int:
    """Pods of `pool` that hold `demand`, packed first-fit-decreasing (a sufficient count, not always the least)."""
    pods: list[_Pod] = []
    for replica in sorted(demand, key=lambda r: (r.gpus, r.cpus), reverse=True):
        if replica.gpus > pool.gpus_per_pod or replica.cpus > pool.cpus_per_pod:
            raise PlanError(
                f"{replica.deployment} needs {replica.gpus:g} GPUs and {replica.cpus:g} CPUs on one node, but a "
                f"{pool.group_name} pod has {pool.gpus_per_pod} GPUs and {pool.cpus_per_pod} CPUs"
            )
        if not any(pod.take(replica) for pod in pods):
            pods.append(_Pod(float(pool.cpus_per_pod), [1.0] * pool.gpus_per_pod))
            pods[-1].take(replica)
    return len(pods)


@dataclass(frozen=True)
class GroupPlan:
    pool: GpuPool
    min_pods: int
    max_pods: int
    deployments: tuple[str, ...]


def plan(config: GraphConfig, pools: Sequence[GpuPool]) -> list[GroupPlan]:
    """Worker groups sized for the graph. A replica with an accelerator type goes to that type's pool, one without
    (the ingress, say) to the first pool. Pools that nothing needs are left out."""
    if not pools:
        raise PlanError("no GPU pool to place replicas on")

    def pool_of(replica: Replica) -> GpuPool:
        if replica.accelerator_type is None:
            return pools[0]
        pool = next((p for p in pools if p.accelerator_type == replica.accelerator_type), None)
        if pool is None:
            raise PlanError(f"{replica.deployment} wants accelerator {replica.accelerator_type}: no pool has it")
        return pool

    groups = []
    for pool in pools:
        low = [r for r in replicas(config, at_max=False) if pool_of(r) == pool]
        high = [r for r in replicas(config, at_max=True) if pool_of(r) == pool]
        if high:
            names = tuple(dict.fromkeys(r.deployment for r in high))
            groups.append(GroupPlan(pool, pods_needed(low, pool), pods_needed(high, pool), names))
    return groups


# --- manifests -----------------------------------------------------------------------------------------------------


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


def _labels(options: RenderOptions) -> dict[str, str]:
    return {"app.kubernetes.io/name": "inference-graph", "app.kubernetes.io/instance": options.name}


def _doc(api_version: str, kind: str, name: str, options: RenderOptions) -> Manifest:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": _labels(options)}}


def _resources(requests: dict[str, str], limits: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    return {"requests": dict(requests), "limits": dict(limits or requests)}


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
                    "resources": _resources({"cpu": "500m", "memory": "512Mi"}),
                },
                "headGroupSpec": _head_group(profile, options),
                "workerGroupSpecs": [_worker_group(profile, options, g) for g in groups],
            },
        },
    }


def _ray_ports(profile: ServeProfile, *, head: bool) -> list[dict[str, Any]]:
    ports = [("serve", profile.port), ("metrics", METRICS_PORT)]
    if head:
        ports = [("gcs-server", GCS_PORT), ("dashboard", DASHBOARD_PORT), ("client", CLIENT_PORT), *ports]
    return [{"name": name, "containerPort": port} for name, port in ports]


def _http_probe(path: str, port: int, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": 10,
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _ray_stop() -> dict[str, Any]:
    return {"preStop": {"exec": {"command": ["/bin/sh", "-c", f"sleep {RAY_DRAIN_S} && ray stop"]}}}


def _head_group(profile: ServeProfile, options: RenderOptions) -> dict[str, Any]:
    ray_head = {
        "name": "ray-head",
        "image": options.image,
        "env": [PROXY_GRPC],
        "ports": _ray_ports(profile, head=True),
        "resources": _resources({"cpu": options.head_cpus, "memory": options.head_memory}),
        "livenessProbe": _http_probe("/api/healthz", AGENT_PORT, 5, 120),
        "readinessProbe": _http_probe("/api/healthz", AGENT_PORT, 5, 10),
        "lifecycle": _ray_stop(),
    }
    return {
        "rayStartParams": {
            "num-cpus": "0",  # no replica on the head: GCS, Serve controller, proxy and the business container only
            "num-gpus": "0",
            "dashboard-host": "0.0.0.0",
            "metrics-export-port": str(METRICS_PORT),
        },
        "template": {
            "metadata": {"labels": _labels(options)},
            "spec": {
                "priorityClassName": REALTIME,
                "terminationGracePeriodSeconds": GRACE_S,
                "initContainers": [
                    {
                        "name": "probe-tools",
                        "image": options.probe_tools_image,
                        "command": ["cp", "/bin/busybox", PROBE_TOOLS],
                        "resources": _resources({"cpu": "100m", "memory": "32Mi"}),
                        "volumeMounts": [{"name": "probe-tools", "mountPath": "/probe-tools"}],
                    }
                ],
                "containers": [ray_head, _business_container(profile, options)],
                "volumes": [{"name": "probe-tools", "emptyDir": {"sizeLimit": "16Mi"}}],
            },
        },
    }


def business_readiness_script(profile: ServeProfile) -> str:
    """Ready while nothing listens on the serve port yet (KubeRay has not submitted the graph, and does so only once
    the pod is Ready), afterwards only when the graph's /ready answers 200."""
    return (
        f"if {PROBE_TOOLS} nc -z -w 2 127.0.0.1 {profile.port}; then "
        f"{PROBE_TOOLS} wget -q -T 4 -O /dev/null http://127.0.0.1:{profile.port}{profile.ready_path}; fi"
    )


def _business_container(profile: ServeProfile, options: RenderOptions) -> dict[str, Any]:
    if options.business_port in RAY_PORTS | {profile.port} or 10002 <= options.business_port <= 19999:
        raise ProfileError(f"business port {options.business_port} collides with a Ray port in the head pod")
    return {
        "name": "business",
        "image": options.business_image,
        "env": [{"name": "INFERENCE_ENDPOINT", "value": profile.endpoint}],
        "ports": [{"name": "business", "containerPort": options.business_port}],
        "resources": _resources({"cpu": "500m", "memory": "512Mi"}, {"cpu": "2", "memory": "2Gi"}),
        "readinessProbe": {
            "exec": {"command": [PROBE_TOOLS, "sh", "-c", business_readiness_script(profile)]},
            "periodSeconds": 5,
            "timeoutSeconds": 8,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": options.business_port},
            "initialDelaySeconds": 15,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": BUSINESS_DRAIN_S}}},
        "volumeMounts": [{"name": "probe-tools", "mountPath": "/probe-tools", "readOnly": True}],
    }


def _worker_group(profile: ServeProfile, options: RenderOptions, group: GroupPlan) -> dict[str, Any]:
    pool = group.pool
    limits = {"cpu": str(pool.cpus_per_pod), "memory": pool.memory_per_pod, GPU_RESOURCE: str(pool.gpus_per_pod)}
    # KubeRay's own readiness for RayService workers: the raylet and this node's Serve proxy.
    ready = " && ".join(
        f"wget -T 4 -q -O- http://localhost:{port}/{path} | grep success"
        for port, path in ((AGENT_PORT, "api/local_raylet_healthz"), (profile.port, "-/healthz"))
    )
    worker = {
        "name": "ray-worker",
        "image": options.image,
        "env": [
            PROXY_GRPC,
            {"name": "HF_HOME", "value": HF_HOME},
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": options.hf_token_secret, "key": "token"}},
            },
            # The ingress runs on the workers: its API keys (guards.auth) come from a Secret.
            {
                "name": "INFERENCE_GRAPH_API_KEYS",
                "valueFrom": {"secretKeyRef": {"name": options.keys_secret, "key": "api-keys", "optional": True}},
            },
            {
                "name": "INFERENCE_GRAPH_ADMIN_KEYS",
                "valueFrom": {"secretKeyRef": {"name": options.keys_secret, "key": "admin-keys", "optional": True}},
            },
        ],
        "ports": _ray_ports(profile, head=False),
        "resources": _resources(limits),
        "livenessProbe": _http_probe("/api/healthz", AGENT_PORT, 5, 120),
        "readinessProbe": {
            "exec": {"command": ["bash", "-c", ready]},
            "initialDelaySeconds": 10,
            "periodSeconds": 5,
            "timeoutSeconds": 10,
            "failureThreshold": 1,
        },
        "lifecycle": _ray_stop(),
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_CACHE}],
    }
    # The autoscaler learns from rayStartParams that this group provides accelerator_type:<type>; without it,
    # replicas pinned to the type never trigger a scale-up. (Ray also detects the type on the node itself.)
    accelerator = json.dumps({f"accelerator_type:{pool.accelerator_type}": 1})
    return {
        "groupName": pool.group_name,
        "replicas": group.min_pods,
        "minReplicas": group.min_pods,
        "maxReplicas": group.max_pods,
        "rayStartParams": {"metrics-export-port": str(METRICS_PORT), "resources": json.dumps(accelerator)},
        "template": {
            "metadata": {"labels": _labels(options)},
            "spec": {
                "priorityClassName": REALTIME,
                "terminationGracePeriodSeconds": GRACE_S,
                "nodeSelector": {GPU_PRODUCT_LABEL: pool.gpu_product},
                "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [worker],
                "volumes": [{"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}}],
            },
        },
    }


def _business_service(options: RenderOptions) -> Manifest:
    return {
        **_doc("v1", "Service", f"{options.name}-business", options),
        "spec": {
            # ray.io/serve=true: KubeRay sets it on the head only once the head's Serve proxy is healthy.
            "selector": {**_labels(options), "ray.io/node-type": "head", "ray.io/serve": "true"},
            "ports": [{"name": "http", "port": 80, "targetPort": "business"}],
        },
    }


def _podmonitor(options: RenderOptions) -> Manifest:
    return {
        **_doc("monitoring.coreos.com/v1", "PodMonitor", f"{options.name}-ray", options),
        "spec": {
            "selector": {"matchLabels": {**_labels(options), "ray.io/is-ray-node": "yes"}},
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.kuberay", description="KubeRay manifests for the graph.")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("render", help="write every manifest of the output folder from a serve config")
    cmd.add_argument("--config", type=Path, required=True, help="serve config, e.g. serve_config.gpu.yaml")
    cmd.add_argument("--out", type=Path, required=True, help="output folder, e.g. kuberay")
    defaults = RenderOptions()
    cmd.add_argument("--name", default=defaults.name, help="RayService name")
    cmd.add_argument("--namespace", default=defaults.namespace, help="namespace (kustomization)")
    cmd.add_argument("--image", default=defaults.image, help="Ray image that contains this project")
    cmd.add_argument("--business-image", default=defaults.business_image, help="the business container's image")
    args = parser.parse_args(argv)
    options = RenderOptions(
        name=args.name, namespace=args.namespace, image=args.image, business_image=args.business_image
    )
    try:
        files = render_files(args.config, options)
    except (ConfigError, ProfileError, PlanError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
    print(f"wrote {', '.join(files)} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
