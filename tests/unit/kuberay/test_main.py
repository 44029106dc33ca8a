"""The command writes what the renderer renders, and nothing on an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.kuberay.__main__ import main
from app.kuberay.manifests import render_files
from tests.unit.kuberay.committed import GPU_PROFILE


def test_cli_writes_the_same_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--config", str(GPU_PROFILE), "--out", str(tmp_path)]) == 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == render_files(GPU_PROFILE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GPU_PROFILE.read_text().replace("host: 0.0.0.0", "host: 127.0.0.1"))
    assert main(["render", "--config", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert "0.0.0.0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
