"""JSON Schemas that clients send (tool parameters, `response_format`), checked before an engine compiles them."""

from __future__ import annotations

from typing import Any


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a valid JSON Schema (checked against the metaschema it names, draft 2020-12 by
    default), or None when it is."""
    from jsonschema import exceptions, validators

    if not isinstance(schema, dict):
        return "a schema must be an object"
    try:
        validators.validator_for(schema, default=validators.Draft202012Validator).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"{exc.message}" + (f" (at {where})" if where else "")
    return None
