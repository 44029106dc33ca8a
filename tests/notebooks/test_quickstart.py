"""The quickstart notebook runs top to bottom against the real default graph it starts itself."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def stdout(nb: nbformat.NotebookNode) -> str:
    """Stream texts joined as they came: one print may arrive in several chunks."""
    return "".join(
        o.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.get("name") == "stdout"
    )


def outputs(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def test_quickstart_notebook_runs() -> None:
    import ray
    from ray import serve

    # The notebook starts its own cluster with `serve run` on port 8000: free this session's cluster first.
    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    text = outputs(nb)
    assert "ready after" in text
    assert "smollm2-135m-instruct" in text and "all-minilm-l6-v2" in text
    assert "Paris" in text
    assert "404 model_not_found" in text
    assert "stopped" in text
    found = dict(re.findall(r"^(paraphrase|unrelated) similarity:\s+(-?\d+(?:\.\d+)?)\s*$", stdout(nb), re.M))
    assert float(found["paraphrase"]) > float(found["unrelated"]), found
