"""kuberay/: generated from the GPU profile, valid against KubeRay's CRDs (made strict) and Kubernetes' own schemas,
and its GPU arithmetic adds up. No cluster runs here; these checks are what can be verified without one."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.config import GraphConfig, load_config
from app.kuberay import (
    PROBE_TOOLS,
    GpuPool,
    PlanError,
    ProfileError,
    RenderOptions,
    Replica,
    business_readiness_script,
    load_profile,
    main,
    plan,
    pods_needed,
    render,
    render_files,
)

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
CRDS = ROOT.parent / "shared" / "kuberay-crds"
GPU_PROFILE = ROOT / "serve_config.gpu.yaml"
K8S_VERSION = "1.33"  # kubernetes-validate ships schemas for 1.25 to 1.37; 1.33 is what managed clusters run now
GPU = "nvidia.com/gpu"

Doc = dict[str, Any]


# --- helpers --------------------------------------------------------------------------------------------------------


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


def strict(schema: Doc) -> Doc:
    """The schema with `additionalProperties: false` on every object node that lists properties and neither allows
    unknown fields (x-kubernetes-preserve-unknown-fields) nor says what else it takes: a misspelt field fails."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict(sub) for sub in out[key]]
    return out


@cache
def crd_schema(kind: str) -> Doc:
    crd = yaml.load(
        (CRDS / f"ray.io_{kind.lower()}s.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: Doc = version["schema"]["openAPIV3Schema"]
    return schema


@cache
def crd_validator(kind: str, strict_schema: bool) -> jsonschema.Draft7Validator:
    schema = strict(crd_schema(kind)) if strict_schema else crd_schema(kind)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def crd_errors(doc: Doc, *, strict_schema: bool = True) -> list[str]:
    validator = crd_validator(doc["kind"], strict_schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


# Prometheus operator's PodMonitor (monitoring.coreos.com/v1): its CRD is not vendored in ../shared and cannot be
# fetched here, so this is the subset of its schema that our manifest uses, with the field names of the v1 API.
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
PODMONITOR_SCHEMA: Doc = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _LABELS},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "relabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "sourceLabels": {"type": "array", "items": {"type": "string"}},
                                        "targetLabel": {"type": "string"},
                                        "action": {"type": "string"},
                                        "regex": {"type": "string"},
                                        "replacement": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate(doc: Doc) -> str:
    """Validate one document by its kind; returns what validated it. Unknown kinds fail."""
    api, kind = doc["apiVersion"], doc["kind"]
    if api == "ray.io/v1" and kind in ("RayService", "RayCluster"):
        errors = crd_errors(doc)
        assert not errors, f"{kind} fails the CRD:\n" + "\n".join(errors)
        # the CRD leaves metadata open; check it as Kubernetes' ObjectMeta
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, K8S_VERSION, strict=True
        )
        return "crd"
    if api == "monitoring.coreos.com/v1" and kind == "PodMonitor":
        jsonschema.Draft7Validator(PODMONITOR_SCHEMA).validate(doc)
        return "own schema"
    if api == "kustomize.config.k8s.io/v1beta1" and kind == "Kustomization":
        assert set(doc) <= {"apiVersion", "kind", "namespace", "resources"}
        return "kustomization"
    return str(kubernetes_validate.validate(doc, K8S_VERSION, strict=True))


def quantity(value: str | int) -> float:
    found = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert found, value
    number, unit = found.groups()
    scale = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]
    return float(number) * scale


# --- generated, never hand-edited -----------------------------------------------------------------------------------


def test_committed_manifests_are_a_fresh_render() -> None:
    fresh = render_files(GPU_PROFILE)
    committed = {p.name: p.read_text() for p in KUBERAY.glob("*.yaml")}
    assert sorted(committed) == sorted(fresh), "kuberay/ holds a YAML file that the renderer does not write"
    for name, text in fresh.items():
        assert committed[name] == text, (
            f"kuberay/{name} is stale: run `python -m app.kuberay render --config serve_config.gpu.yaml --out kuberay`"
        )


def test_cli_writes_the_same_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--config", str(GPU_PROFILE), "--out", str(tmp_path)]) == 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == render_files(GPU_PROFILE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GPU_PROFILE.read_text().replace("host: 0.0.0.0", "host: 127.0.0.1"))
    assert main(["render", "--config", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert "0.0.0.0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = manifests()["kustomization.yaml"]
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(set(manifests()) - {"kustomization.yaml"})
    assert all((KUBERAY / name).is_file() for name in listed)
    assert (KUBERAY / "Dockerfile").is_file()


# --- schemas --------------------------------------------------------------------------------------------------------


def test_every_document_validates() -> None:
    validated = {}
    for name, docs in manifests().items():
        for doc in docs:
            validated[f"{name}:{doc['kind']}"] = validate(doc)
    assert validated["rayservice.yaml:RayService"] == "crd"
    assert validated["podmonitor.yaml:PodMonitor"] == "own schema"
    for core in (
        "priorityclasses.yaml:PriorityClass",
        "resourcequota.yaml:ResourceQuota",
        "business-service.yaml:Service",
        "model-cache.yaml:PersistentVolumeClaim",
        "namespace.yaml:Namespace",
    ):
        assert validated[core] == K8S_VERSION


def test_cluster_config_also_validates_as_a_raycluster() -> None:
    doc = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"}, "spec": cluster()}
    assert validate(doc) == "crd"


def test_pod_templates_validate_as_kubernetes_pod_templates() -> None:
    for i, template in enumerate(pod_templates()):
        doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": template}
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION


@pytest.mark.parametrize(
    ("path", "field", "misspelt"),
    [
        (["spec", "rayClusterConfig", "headGroupSpec"], "rayStartParams", "rayStartParam"),
        (["spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0], "image", "imgae"),
        (["spec", "rayClusterConfig", "workerGroupSpecs", 0], "maxReplicas", "maxReplica"),
        (["spec"], "serveConfigV2", "serveConfig"),
    ],
)
def test_a_misspelt_field_fails_only_under_the_strict_schema(path: list[str | int], field: str, misspelt: str) -> None:
    doc = copy.deepcopy(rayservice())
    node: Any = doc
    for key in path:
        node = node[key]
    node[misspelt] = node.pop(field)
    if field == "rayStartParams" or field == "image":
        assert crd_errors(doc, strict_schema=False) == [], "the CRD as shipped lets the misspelling through"
    errors = crd_errors(doc)
    assert any(misspelt in e for e in errors), errors


def test_strict_keeps_open_maps_open() -> None:
    schema = strict(crd_schema("RayService"))
    head = schema["properties"]["spec"]["properties"]["rayClusterConfig"]["properties"]["headGroupSpec"]
    assert head["additionalProperties"] is False
    assert head["properties"]["rayStartParams"]["additionalProperties"] == {"type": "string"}
    doc = copy.deepcopy(rayservice())
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["any-ray-flag"] = "1"
    assert crd_errors(doc) == []


def test_podmonitor_schema_rejects_a_misspelt_field() -> None:
    (doc,) = manifests()["podmonitor.yaml"]
    doc["spec"]["podMetricsEndpoints"][0]["prot"] = doc["spec"]["podMetricsEndpoints"][0].pop("port")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(PODMONITOR_SCHEMA).validate(doc)


def test_kubernetes_validate_rejects_a_misspelt_core_field() -> None:
    (quota,) = manifests()["resourcequota.yaml"]
    quota["spec"]["hardd"] = quota["spec"].pop("hard")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(quota, K8S_VERSION, strict=True)


def test_what_kuberays_operator_checks_beyond_the_crd() -> None:
    """Rules of KubeRay's ValidateRayServiceSpec/ValidateRayClusterSpec that the CRD schema does not carry."""
    doc = rayservice()
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", doc["metadata"]["name"])  # DNS-1035 label
    assert doc["spec"]["upgradeStrategy"]["type"] in ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")
    spec = cluster()
    assert "headService" not in spec["headGroupSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        assert group["template"]["spec"]["containers"], "a group needs a container"
        assert "labels" not in group["rayStartParams"]
        sets_resources = {"num-cpus", "num-gpus", "memory", "resources"} & set(group["rayStartParams"])
        assert not (sets_resources and group.get("resources")), "resources in both rayStartParams and resources"
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(names) == len(set(names))
    for g in spec["workerGroupSpecs"]:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


# --- serveConfigV2 --------------------------------------------------------------------------------------------------


def test_serve_config_is_the_gpu_profile_and_validates() -> None:
    text = rayservice()["spec"]["serveConfigV2"]
    assert isinstance(text, str)
    serve = yaml.safe_load(text)
    assert serve == yaml.safe_load(GPU_PROFILE.read_text())
    (app,) = serve["applications"]
    assert app["import_path"] == "deployments.graph:build_app"
    config = load_config(app["args"])  # hub weights: fetched on the nodes, so verify_weights skips them
    assert all(v.weights.hub for m in config.models for v in m.versions)
    assert "rayClusterConfig:\n" in (KUBERAY / "rayservice.yaml").read_text()
    assert "serveConfigV2: |\n" in (KUBERAY / "rayservice.yaml").read_text(), "a block scalar, readable in review"


def test_profiles_that_a_cluster_cannot_run_are_refused(tmp_path: Path) -> None:
    profile = yaml.safe_load(GPU_PROFILE.read_text())
    version = profile["applications"][0]["args"]["models"][0]["versions"][0]
    version["weights"] = {"path": str(tmp_path)}  # exists here, not on the cluster's nodes
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(profile))
    with pytest.raises(ProfileError, match=r"qwen2.5-7b-instruct@stable"):
        load_profile(local)
    profile["applications"][0]["args"]["verify_weights"] = False  # baked into the image: the author's call
    local.write_text(yaml.safe_dump(profile))
    assert load_profile(local).graph.verify_weights is False


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


def test_metrics_port_is_exported_and_scraped() -> None:
    for group in [cluster()["headGroupSpec"], *cluster()["workerGroupSpecs"]]:
        assert group["rayStartParams"]["metrics-export-port"] == "8080"
        ray = group["template"]["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": 8080} in ray["ports"]
    (monitor,) = manifests()["podmonitor.yaml"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.pop("ray.io/is-ray-node") == "yes"  # KubeRay's label on every Ray pod
    for template in pod_templates():
        assert wanted.items() <= template["metadata"]["labels"].items(), "head and workers are both scraped"


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


def test_priority_classes_are_defined_and_used() -> None:
    classes = {d["metadata"]["name"]: d for d in manifests()["priorityclasses.yaml"]}
    assert classes["inference-realtime"]["value"] > classes["inference-batch"]["value"]
    assert classes["inference-batch"]["preemptionPolicy"] == "Never"
    assert not any(c["globalDefault"] for c in classes.values())
    for template in pod_templates():
        assert template["spec"]["priorityClassName"] == "inference-realtime"


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


def test_business_service_waits_for_kuberays_serve_label() -> None:
    (service,) = manifests()["business-service.yaml"]
    selector = dict(service["spec"]["selector"])
    assert selector.pop("ray.io/serve") == "true", "KubeRay sets it on the head once its Serve proxy is healthy"
    assert selector.pop("ray.io/node-type") == "head"
    head = cluster()["headGroupSpec"]["template"]
    assert selector.items() <= head["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "business"
    assert rayservice()["spec"]["excludeHeadPodFromServeSvc"] is False


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


# --- GPU arithmetic -------------------------------------------------------------------------------------------------


def test_gpu_arithmetic_adds_up_for_each_worker_group() -> None:
    config = graph()
    groups = cluster()["workerGroupSpecs"]
    types = [next(iter(json.loads(json.loads(g["rayStartParams"]["resources"])))).split(":")[1] for g in groups]
    for group, accelerator in zip(groups, types, strict=True):
        (ray,) = group["template"]["spec"]["containers"]
        gpus_per_pod, cpus_per_pod = int(ray["resources"]["limits"][GPU]), quantity(ray["resources"]["limits"]["cpu"])
        versions = [
            v
            for m in config.models
            for v in m.versions
            if v.accelerator_type == accelerator or (v.accelerator_type is None and group is groups[0])
        ]
        assert any(v.num_gpus > 0 for v in versions)
        for v in versions:
            assert v.num_gpus <= gpus_per_pod, f"{v.version}: {v.num_gpus} GPUs must sit on one node"
        whole = sum(v.max_replicas * v.num_gpus for v in versions if v.num_gpus >= 1)
        fractional = sum(v.max_replicas * v.num_gpus for v in versions if v.num_gpus < 1)
        assert whole + math.ceil(fractional) <= group["maxReplicas"] * gpus_per_pod
        cpus = sum(v.max_replicas * (v.num_cpus + (v.num_gpus if v.num_gpus > 1 else 0)) for v in versions)
        cpus += config.ingress.num_replicas * config.ingress.num_cpus if group is groups[0] else 0
        assert cpus <= group["maxReplicas"] * cpus_per_pod
    assert {v.accelerator_type for m in config.models for v in m.versions} - {None} <= set(types)
    (quota,) = manifests()["resourcequota.yaml"]
    surge = 2 * sum(
        g["maxReplicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"][GPU]) for g in groups
    )
    assert int(quota["spec"]["hard"][f"requests.{GPU}"]) >= surge, "NewCluster runs two clusters during an upgrade"


def test_the_gpu_profile_plan() -> None:
    (group,) = plan(load_profile(GPU_PROFILE).graph, RenderOptions().gpu_pools)
    # at most: 72B on 4 GPUs, 2 x 32B on 2 each, 4.5 GPUs of 7B shares, 1 GPU of encoders: 12 of 16 GPUs
    assert (group.min_pods, group.max_pods) == (1, 2)
    assert "chat-qwen2_5-72b-instruct-v1" in group.deployments


def pool(gpus: int, cpus: int = 64) -> GpuPool:
    return GpuPool("X", "NVIDIA-X", gpus_per_pod=gpus, cpus_per_pod=cpus)


def test_fractional_replicas_share_gpus() -> None:
    half, quarter = Replica("half", 0.5, 1, None), Replica("quarter", 0.25, 1, None)
    assert pods_needed([half] * 2, pool(1)) == 1
    assert pods_needed([half] * 3, pool(1)) == 2
    assert pods_needed([quarter] * 4 + [half] * 2, pool(2)) == 1
    assert pods_needed([Replica("third", 0.4, 1, None)] * 3, pool(1)) == 2, "a replica's share sits on one GPU"


def test_tensor_parallel_replicas_need_all_their_gpus_on_one_node() -> None:
    tp2, half = Replica("tp2", 2, 4, None), Replica("half", 0.5, 1, None)
    assert pods_needed([tp2, tp2], pool(2)) == 2
    assert pods_needed([half, tp2, half], pool(3)) == 1, "whole GPUs go to the tensor-parallel replica first"
    assert pods_needed([half, half, half, tp2], pool(3)) == 2
    with pytest.raises(PlanError, match="tp4 needs 4 GPUs"):
        pods_needed([Replica("tp4", 4, 6, None)], pool(2))
    with pytest.raises(PlanError, match="qwen2_5-72b"):
        plan(load_profile(GPU_PROFILE).graph, [GpuPool("H100", "NVIDIA-H100", gpus_per_pod=2)])


def test_cpus_count_too() -> None:
    assert pods_needed([Replica("cpu-heavy", 0.25, 40, None)] * 2, pool(8, cpus=64)) == 2


def test_replicas_go_to_their_accelerators_pool() -> None:
    config = load_profile(GPU_PROFILE).graph
    with pytest.raises(PlanError, match="wants accelerator H100"):
        plan(config, [GpuPool("L4", "NVIDIA-L4")])
    groups = plan(config, [GpuPool("L4", "NVIDIA-L4", gpus_per_pod=4), GpuPool("H100", "NVIDIA-H100-80GB-HBM3")])
    l4, h100 = groups
    assert "embedding-bge-large-en-v1_5-v1" in l4.deployments and "ingress" in l4.deployments
    assert all(name.startswith("chat-") for name in h100.deployments)


def test_rays_own_autoscaler_reads_the_groups_and_packs_the_replicas() -> None:
    """Ray's KubeRay autoscaler code (Ray is pinned at 2.60.0; no cluster is started) derives the node types from the
    RayCluster spec and bin-packs the replicas' resource demands onto them."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.resource_demand_scheduler import get_bin_pack_residual

    ray_cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c", "namespace": "n"}}
    types = _derive_autoscaling_config_from_ray_cr({**ray_cluster, "spec": cluster()})["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0 and types["headgroup"]["resources"]["GPU"] == 0
    (group,) = cluster()["workerGroupSpecs"]
    node = types[group["groupName"]]
    assert node["resources"]["GPU"] == 8 and node["resources"]["accelerator_type:H100"] == 1

    config = graph()
    demands: dict[bool, list[dict[str, Any]]] = {}
    for at_max in (False, True):
        demands[at_max] = [{"CPU": config.ingress.num_cpus}] * config.ingress.num_replicas
        for v in (v for m in config.models for v in m.versions):
            tp = v.vllm.tensor_parallel_size  # a STRICT_PACK placement group: one combined demand
            demand: dict[str, Any] = {"CPU": v.num_cpus + (tp if tp > 1 else 0), "GPU": v.num_gpus}
            if v.accelerator_type:
                demand[f"accelerator_type:{v.accelerator_type}"] = 0.001
            low = v.autoscaling.min_replicas if v.autoscaling else v.num_replicas
            demands[at_max] += [demand] * (v.max_replicas if at_max else low)

    def unplaced(nodes: int, at_max: bool) -> int:
        residual, _ = get_bin_pack_residual([dict(node["resources"]) for _ in range(nodes)], demands[at_max])
        return len(residual)

    assert unplaced(node["max_workers"], at_max=True) == 0
    assert unplaced(node["min_workers"], at_max=False) == 0
    assert unplaced(node["max_workers"] - 1, at_max=True) > 0, "maxReplicas is not larger than it needs to be"
