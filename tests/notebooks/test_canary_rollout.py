"""The canary notebook: a healthy canary is promoted, a faulty one rolled back, and clients see no failures."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_canary_rollout_notebook_runs() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():  # the notebook starts its own cluster
        serve.shutdown()
        ray.shutdown()
    nb = nbformat.read(ROOT / "notebooks" / "canary_rollout.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)  # a print may arrive in several stream chunks
    assert "smollm2-healthy: promoted, canary weight 100%" in text
    assert "smollm2-faulty: rolled-back, canary weight 0%" in text
    assert "gate failed: error rate" in text
    assert "smollm2-healthy: " in text and "0 failed as the client saw them" in text
    assert all(line.endswith(" 0 failed as the client saw them") for line in text.splitlines() if "requests," in line)
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot
    assert "stopped" in text
