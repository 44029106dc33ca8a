"""`python -m app.kuberay render --config serve_config.gpu.yaml --out kuberay`: writes every manifest of `kuberay/`
(not the Dockerfile)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from app.config import ConfigError
from app.kuberay.groups import PlanError
from app.kuberay.manifests import render_files
from app.kuberay.options import RenderOptions
from app.kuberay.profile import ProfileError


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
