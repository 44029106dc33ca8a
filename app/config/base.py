"""What every config model shares: strict, frozen models and the rules for names and file paths."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # model, version, rule and tier names
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # files the config names (chat templates) are relative to it


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def repeated(names: list[str]) -> list[str]:
    """The names that appear more than once, sorted."""
    return sorted({name for name in names if names.count(name) > 1})
