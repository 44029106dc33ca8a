"""The README's config reference, generated from the config model so the two cannot drift apart.

`python -m app.config_reference` prints it, `--write README.md` puts it between the README's markers; a unit test
checks that the README holds exactly this text.
"""

from __future__ import annotations

import sys
import types
import typing
from enum import Enum
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from app.config import GraphConfig


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "see below" if _nested(field.annotation) else "`{}`"
    if field.default is PydanticUndefined or field.default is None:
        return "—"
    value = field.default.value if isinstance(field.default, Enum) else field.default
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _nested(annotation: object) -> type[BaseModel] | None:
    """The config model inside an annotation (`X`, `list[X]`, `X | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        inner = _nested(arg)
        if inner is not None:
            return inner
    return None


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        rows.append(f"| `{path}` | {_type_name(field.annotation)} | {_default(field)} | {field.description or ''} |")
        inner = _nested(field.annotation)
        if inner is not None:
            is_list = typing.get_origin(field.annotation) is list
            nested.append((inner, f"{path}[]." if is_list else f"{path}."))
    for inner, inner_prefix in nested:
        rows.extend(_rows(inner, inner_prefix))
    return rows


def reference() -> str:
    header = ["| field | type | default | meaning |", "|---|---|---|---|"]
    return "\n".join(header + _rows(GraphConfig, ""))


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def write_into(path: Path) -> None:
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{reference()}\n{END}{tail}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_into(Path(sys.argv[2]))
    else:
        print(reference())
