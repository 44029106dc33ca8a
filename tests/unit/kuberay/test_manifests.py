"""kuberay/: generated from the GPU profile, valid against KubeRay's CRDs (made strict) and Kubernetes' own schemas.
No cluster runs here; these checks are what can be verified without one."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.config import load_config
from app.kuberay.manifests import render_files
from tests.unit.kuberay.committed import GPU_PROFILE, KUBERAY, ROOT, Doc, cluster, manifests, pod_templates, rayservice

CRDS = ROOT.parent / "shared" / "kuberay-crds"
K8S_VERSION = "1.33"  # kubernetes-validate ships schemas for 1.25 to 1.37; 1.33 is what managed clusters run now


# --- helpers --------------------------------------------------------------------------------------------------------


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


# --- generated, never hand-edited -----------------------------------------------------------------------------------


def test_committed_manifests_are_a_fresh_render() -> None:
    fresh = render_files(GPU_PROFILE)
    committed = {p.name: p.read_text() for p in KUBERAY.glob("*.yaml")}
    assert sorted(committed) == sorted(fresh), "kuberay/ holds a YAML file that the renderer does not write"
    for name, text in fresh.items():
        assert committed[name] == text, (
            f"kuberay/{name} is stale: run `python -m app.kuberay render --config serve_config.gpu.yaml --out kuberay`"
        )


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


# --- what the pods and the other documents agree on -----------------------------------------------------------------


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


def test_priority_classes_are_defined_and_used() -> None:
    classes = {d["metadata"]["name"]: d for d in manifests()["priorityclasses.yaml"]}
    assert classes["inference-realtime"]["value"] > classes["inference-batch"]["value"]
    assert classes["inference-batch"]["preemptionPolicy"] == "Never"
    assert not any(c["globalDefault"] for c in classes.values())
    for template in pod_templates():
        assert template["spec"]["priorityClassName"] == "inference-realtime"


def test_business_service_waits_for_kuberays_serve_label() -> None:
    (service,) = manifests()["business-service.yaml"]
    selector = dict(service["spec"]["selector"])
    assert selector.pop("ray.io/serve") == "true", "KubeRay sets it on the head once its Serve proxy is healthy"
    assert selector.pop("ray.io/node-type") == "head"
    head = cluster()["headGroupSpec"]["template"]
    assert selector.items() <= head["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "business"
    assert rayservice()["spec"]["excludeHeadPodFromServeSvc"] is False
