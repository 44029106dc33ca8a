"""The pod templates: a CPU-only head with the business sidecar, GPU workers with the model cache, and every
container limited, probed and drained before its pod's grace period ends."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from app.haproxy import threads_for
from app.kuberay.manifests import render
from app.kuberay.options import RenderOptions
from app.kuberay.pods import PROBE_TOOLS, business_readiness_script
from app.kuberay.profile import ProfileError, load_profile
from tests.unit.kuberay.committed import (
    GPU,
    GPU_PROFILE,
    KUBERAY,
    ROOT,
    Doc,
    cluster,
    container,
    containers,
    graph,
    manifests,
    pod_templates,
    quantity,
)

# --- cluster shape --------------------------------------------------------------------------------------------------


def test_head_is_cpu_only_and_workers_hold_the_gpus() -> None:
    head = cluster()["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert head["rayStartParams"]["num-cpus"] == "0", "replicas stay off the head"
    for c in containers(head["template"]):
        assert GPU not in c["resources"]["limits"] and GPU not in c["resources"]["requests"]
    assert "tolerations" not in head["template"]["spec"], "the head must not land on the GPU pool"
    for group in cluster()["workerGroupSpecs"]:
        spec = group["template"]["spec"]
        (ray,) = spec["containers"]
        assert int(ray["resources"]["limits"][GPU]) >= 1
        assert ray["resources"]["limits"][GPU] == ray["resources"]["requests"][GPU]
        assert spec["nodeSelector"]["nvidia.com/gpu.product"].startswith("NVIDIA-")
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        accelerator = json.loads(json.loads(group["rayStartParams"]["resources"]))
        assert list(accelerator) == [f"accelerator_type:{group['groupName'].removeprefix('gpu-').upper()}"]


def test_every_container_has_requests_and_limits() -> None:
    limited = [c for t in pod_templates() for c in containers(t)] + [
        {"name": "autoscaler", "resources": cluster()["autoscalerOptions"]["resources"]}
    ]
    assert {c["name"] for c in limited} >= {"ray-head", "business", "probe-tools", "ray-worker", "autoscaler"}
    for c in limited:
        requests, limits = c["resources"]["requests"], c["resources"]["limits"]
        for key in ("cpu", "memory"):
            assert quantity(requests[key]) <= quantity(limits[key]), (c["name"], key)


def test_model_cache_and_hugging_face_token() -> None:
    (pvc,) = manifests()["model-cache.yaml"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for group in cluster()["workerGroupSpecs"]:
        spec = group["template"]["spec"]
        (ray,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        (mount,) = [m for m in ray["volumeMounts"] if volumes[m["name"]].get("persistentVolumeClaim")]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        env = {e["name"]: e for e in ray["env"]}
        assert env["HF_HOME"]["value"].startswith(mount["mountPath"] + "/")
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
        assert "value" not in env["HF_TOKEN"]
    assert "hf_" not in "".join(p.read_text() for p in KUBERAY.iterdir()), "no token in the repository"


def test_every_ray_container_serves_through_haproxy_sized_for_its_pod() -> None:
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)
    timeout = graph().limits.request_timeout_s
    for template in pod_templates():
        ray = next(c for c in template["spec"]["containers"] if c["name"].startswith("ray-"))
        env = {e["name"]: e.get("value") for e in ray["env"]}
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert int(env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) > timeout  # a reload cuts no request the graph allows
        assert env["RAY_SERVE_HAPROXY_NBTHREAD"] == str(threads_for(quantity(ray["resources"]["limits"]["cpu"])))
        launcher = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
        assert launcher.is_relative_to(workdir)  # the image's copy of this repository's file
        assert "COPY --chown=ray:users deployments/ deployments/" in dockerfile
        assert os.access(ROOT / launcher.relative_to(workdir), os.X_OK)


def drain_seconds(c: Doc) -> int:
    """How long a container's preStop hook holds it before SIGTERM."""
    stop = c["lifecycle"]["preStop"]
    if "sleep" in stop:
        return int(stop["sleep"]["seconds"])
    found = re.search(r"sleep (\d+)", stop["exec"]["command"][-1])
    assert found, stop
    return int(found[1])


def test_health_probes_and_graceful_shutdown() -> None:
    for template in pod_templates():
        for c in containers(template, init=False):
            assert "livenessProbe" in c and "readinessProbe" in c, c["name"]
            assert drain_seconds(c) + 30 <= template["spec"]["terminationGracePeriodSeconds"], c["name"]
    head = cluster()["headGroupSpec"]["template"]
    assert drain_seconds(container(head, "ray-head")) > drain_seconds(container(head, "business")), (
        "the graph outlives the business container's drain"
    )


# --- the business sidecar -------------------------------------------------------------------------------------------


def test_business_container_is_a_sidecar_of_the_head() -> None:
    head = cluster()["headGroupSpec"]["template"]
    assert head["spec"]["containers"][0]["name"] == "ray-head", "KubeRay treats the first container as Ray's"
    business = container(head, "business")
    assert {"name": "INFERENCE_ENDPOINT", "value": "http://localhost:8000/v1"} in business["env"]
    probe = business["readinessProbe"]["exec"]["command"]
    assert probe[:3] == [PROBE_TOOLS, "sh", "-c"] and "http://127.0.0.1:8000/ready" in probe[3]
    ports = [p["containerPort"] for c in containers(head, init=False) for p in c.get("ports", [])]
    assert len(ports) == len(set(ports)), "containers of one pod share its ports"
    with pytest.raises(ProfileError, match="collides"):
        render(load_profile(GPU_PROFILE), RenderOptions(business_port=8080))


@pytest.mark.parametrize(
    ("listening", "ready_status", "ready"),
    [
        (False, 1, True),  # nothing on :8000 yet: KubeRay has not submitted the graph and waits for this pod
        (True, 1, False),  # the graph is deploying: /ready is not 200
        (True, 0, True),  # /ready answered 200
    ],
)
def test_business_readiness_probe(tmp_path: Path, listening: bool, ready_status: int, ready: bool) -> None:
    busybox = tmp_path / "busybox"
    calls = tmp_path / "calls"
    busybox.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        f'case "$1" in nc) exit {0 if listening else 1};; wget) exit {ready_status};; esac\nexit 2\n'
    )
    busybox.chmod(0o755)
    script = business_readiness_script(load_profile(GPU_PROFILE)).replace(PROBE_TOOLS, str(busybox))
    assert (subprocess.run(["sh", "-c", script], check=False).returncode == 0) is ready
    log = calls.read_text()
    assert "nc -z -w 2 127.0.0.1 8000" in log
    assert ("http://127.0.0.1:8000/ready" in log) is listening
