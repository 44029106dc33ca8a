"""Serve configs that a cluster cannot run are refused before anything is rendered."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.kuberay.profile import ProfileError, load_profile
from tests.unit.kuberay.committed import GPU_PROFILE


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
