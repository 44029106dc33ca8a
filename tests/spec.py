"""OpenAI's published OpenAPI spec as JSON Schema validators, for the conformance tests.

`validator("CreateChatCompletionResponse")` returns a Draft 2020-12 validator for that component schema; every
`$ref` resolves into the spec itself through a `referencing` registry, and formats are checked.

The spec (`/work/shared/openai-openapi/openapi.yaml`, OpenAPI 3.1) still marks some schemas `nullable: true`, an
OpenAPI 3.0 keyword that JSON Schema does not know and would silently ignore, which would make those schemas
stricter than the spec means. The loader rewrites each one into what it means in JSON Schema:
- a schema with a `type` and no `$ref` or combinator gets `"null"` added to its type (and `None` to its `enum`);
- any other schema is wrapped as `{"anyOf": [schema, {"type": "null"}]}`.
`nullable: false` is dropped. Nothing else is changed, and no schema is loosened beyond its `nullable`. YAML dates in
the file (in examples) are loaded as the strings JSON would carry.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# shared/ lies beside the checkout, as CI lays it out
SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.yaml"
SPEC_URI = "urn:openai:openapi"

_COMBINATORS = {"$ref", "allOf", "anyOf", "oneOf", "not", "if"}
_LITERALS = {"enum", "const", "default", "example", "examples", "x-oaiMeta"}  # values, not schemas


def rewrite_nullable(node: Any) -> Any:
    """The OpenAPI `nullable` keyword turned into JSON Schema, throughout a document."""
    if isinstance(node, list):
        return [rewrite_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in _LITERALS else rewrite_nullable(v)) for k, v in node.items()}
    if not isinstance(out.get("nullable"), bool):
        return out
    nullable = out.pop("nullable")
    if not nullable:
        return out
    if "type" in out and not _COMBINATORS & out.keys():
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"] if "null" not in types else types
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [out, {"type": "null"}]}


@functools.cache
def spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        raw = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    document: dict[str, Any] = rewrite_nullable(json.loads(json.dumps(raw, default=str)))
    return document


@functools.cache
def _registry() -> Registry[Any]:
    return Registry().with_resource(SPEC_URI, Resource(contents=spec(), specification=DRAFT202012))


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A validator for `#/components/schemas/<name>`; raises KeyError for a name the spec does not have."""
    if name not in spec()["components"]["schemas"]:
        raise KeyError(f"the spec has no component schema {name!r}")
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{name}"},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def errors(name: str, instance: object) -> list[str]:
    """Every way `instance` breaks the schema, as `path: message` lines (empty when it conforms)."""
    found = validator(name).iter_errors(instance)
    return sorted(f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in found)


def assert_conforms(name: str, instance: object) -> None:
    problems = errors(name, instance)
    assert not problems, f"not a valid {name}:\n" + "\n".join(problems)


def schema_properties(name: str) -> set[str]:
    """The property names of a component schema, through `allOf` and `$ref`s (for the request field lists)."""
    schemas = spec()["components"]["schemas"]

    def walk(node: dict[str, Any]) -> set[str]:
        if "$ref" in node:
            return walk(schemas[node["$ref"].rsplit("/", 1)[-1]])
        names = set(node.get("properties", {}))
        for part in node.get("allOf", []):
            names |= walk(part)
        return names

    return walk(schemas[name])
