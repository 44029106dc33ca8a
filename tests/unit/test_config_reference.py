from pathlib import Path

from app.config import GraphConfig
from app.config_reference import reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_holds_the_generated_reference() -> None:
    text = README.read_text()
    start = text.index("<!-- config-reference:start -->") + len("<!-- config-reference:start -->")
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end].strip() == reference(), "README is stale: paste `python -m app.config_reference`"


def test_every_field_is_described() -> None:
    table = reference()
    assert "| `models[].versions[].vllm.kv_cache_space_gb` | int | `1` |" in table
    for line in table.splitlines()[2:]:
        assert not line.endswith("|  |"), f"field without a description: {line}"
    assert len(table.splitlines()) - 2 >= len(GraphConfig.model_fields)
