"""Pydantic model -> structural OpenAPI v3 schema, as apiextensions.k8s.io/v1 accepts it.

pydantic emits JSON Schema 2020-12 with ``$ref``s, ``anyOf`` for optionals and titles; a CRD needs a
structural schema: everything inline, one type per node, no titles, ``exclusiveMinimum`` as a
flag, and defaults the API server can apply. Anything this module does not understand raises,
so a model change that the CRD cannot express fails the build instead of loosening the schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

Schema = dict[str, Any]

# Keys copied as they are; everything else is translated below or rejected.
_PASSTHROUGH = {
    "type",
    "description",
    "enum",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "default",
}
_DROPPED = {"title", "$defs", "examples"}
_FORMATS = {"date-time", "date", "int32", "int64", "double", "float", "byte", "uri"}
PRESERVE_KEY = "x-kubernetes-preserve-unknown-fields"


class SchemaError(ValueError):
    """The model uses a construct a structural schema cannot express."""


class _WithFactoryDefaults(GenerateJsonSchema):
    """Emit defaults the API server should fill in, including those from default factories.

    A nested model defaults to ``{}`` (plus whatever differs from its own defaults), so the API
    server fills the nested defaults too; ``None`` and empty collections are left out.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
        else:
            value = schema.get("default", NoDefault)
        if value is None or value is NoDefault:
            return NoDefault
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        if isinstance(value, dict | list) and not value:
            return NoDefault
        return value


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model``, wire names (camelCase) as properties."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    return _convert(raw, raw.get("$defs", {}), path=model.__name__)


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _inline(node, defs, path)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "format":
            if value in _FORMATS:
                out[key] = value
        elif key in _PASSTHROUGH or key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            _additional(out, node, value, defs, path)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 gives the bound; OpenAPI v3.0 takes the bound plus a flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            raise SchemaError(f"{path}: cannot express {key!r} in a structural schema")
    if "type" not in out and not out.get(PRESERVE_KEY):
        raise SchemaError(f"{path}: no single type")
    return out


def _inline(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    """Resolve ``$ref`` and drop the ``null`` branch of an optional, keeping the outer keys."""
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            outer = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **outer}
        elif "anyOf" in node:
            branches = [b for b in node["anyOf"] if b != {"type": "null"}]
            if len(branches) != 1:
                raise SchemaError(f"{path}: unions other than Optional[X] have no structural form")
            outer = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**branches[0], **outer}
        else:
            return node


def _additional(out: Schema, node: Schema, value: Any, defs: dict[str, Schema], path: str) -> None:
    if value is False:
        return  # extra="forbid": the API server prunes unknown fields (and kubectl rejects them)
    if value is True:
        if not node.get(PRESERVE_KEY):
            raise SchemaError(f"{path}: free-form object; mark it with {PRESERVE_KEY} on purpose")
        return
    if "properties" in node:
        raise SchemaError(f"{path}: properties and additionalProperties together are not structural")
    out["additionalProperties"] = _convert(value, defs, f"{path}.*")


def subschema(schema: Schema, *path: str) -> Schema:
    """The node at a property path, e.g. ``subschema(spec, "clickhouse", "settings")``."""
    node = schema
    for name in path:
        node = node["items"] if name == "[]" else node["properties"][name]
    return node
