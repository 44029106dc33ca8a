"""What the renderer takes beyond the serve config: names, images, GPU pools, Secrets and sizes."""

from __future__ import annotations

from dataclasses import dataclass

from app.kuberay.groups import GpuPool


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

    @property
    def labels(self) -> dict[str, str]:
        """The labels of every object and pod."""
        return {"app.kubernetes.io/name": "inference-graph", "app.kubernetes.io/instance": self.name}
