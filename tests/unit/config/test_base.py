import pytest
from pydantic import ValidationError

from app.config import PROJECT_ROOT, Strict, TierConfig
from app.config.base import repeated


class Sample(Strict):
    size: int = 1


def test_config_models_forbid_unknown_fields_and_are_frozen() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Sample.model_validate({"sise": 2})
    sample = Sample()
    with pytest.raises(ValidationError, match="frozen"):
        sample.size = 2  # type: ignore[misc]


def test_names_are_short_and_start_with_a_letter_or_digit() -> None:
    assert TierConfig(name="v1.2_b-3", model="m").name == "v1.2_b-3"
    for bad in ("", "-v1", "v 1", "x" * 65):
        with pytest.raises(ValidationError, match="name"):
            TierConfig(name=bad, model="m")


def test_config_paths_are_relative_to_the_project_root() -> None:
    assert (PROJECT_ROOT / "serve_config.yaml").is_file()
    assert (PROJECT_ROOT / "app" / "config" / "__init__.py").is_file()


def test_repeated_names_are_listed_once_sorted() -> None:
    assert repeated(["b", "a", "b", "c", "a", "b"]) == ["a", "b"]
    assert repeated(["a", "b"]) == []
