"""Is a new JSON Schema of an event compatible with the old one? Pure; used by the contract checks.

Compatible means both directions that matter for an event log:
- what a consumer built on the old schema reads is still there: no field removed or renamed;
- the new schema still reads every old event (projections are rebuilt from offset 0): no type narrowed,
  no enum value dropped, no constraint tightened, no field newly required.
Adding an optional field or widening a type is compatible in that sense, but not for a running consumer of
the old code: payloads refuse unknown fields (`additionalProperties: false`), so it dead-letters an event
carrying the new field (or a widened value). Deploy the consumers of a changed event before its producer;
whatever an old consumer dead-lettered meanwhile is replayed with `herald dlq replay` once it is upgraded.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_TIGHTER_IF_LARGER = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
_TIGHTER_IF_SMALLER = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")


def _resolve(schema: Schema, root: Schema) -> Schema:
    seen = 0
    while "$ref" in schema and seen < 50:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref supported, got {ref}")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema


def _branches(schema: Schema, root: Schema) -> list[Schema]:
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [b for sub in schema[key] for b in _branches(sub, root)]
    return [schema]


def _types(branch: Schema) -> set[str]:
    if "const" in branch:
        return {"const"}
    if "enum" in branch:
        return {"enum"}
    declared = branch.get("type")
    if declared is None:
        return {"any"} if not branch.get("properties") else {"object"}
    return set(declared) if isinstance(declared, list) else {declared}


def _accepts_type(new_branches: list[Schema], wanted: str) -> list[Schema]:
    matches = []
    for branch in new_branches:
        types = _types(branch)
        if wanted in types or "any" in types or (wanted == "integer" and "number" in types):
            matches.append(branch)
    return matches


def incompatibilities(old: Schema, new: Schema) -> list[str]:
    """Every reason the new schema breaks readers or data of the old one; empty when compatible."""
    problems: list[str] = []
    _compare(old, old, new, new, "", problems)
    return problems


def _compare(old: Schema, old_root: Schema, new: Schema, new_root: Schema, path: str, out: list[str]) -> None:
    new_branches = _branches(new, new_root)
    for old_branch in _branches(old, old_root):
        _compare_branch(old_branch, old_root, new_branches, new_root, path, out)


def _compare_branch(old: Schema, old_root: Schema, new_branches: list[Schema], new_root: Schema,
                    path: str, out: list[str]) -> None:
    where = path or "(root)"
    for old_type in _types(old):
        if old_type in ("const", "enum"):
            values = [old["const"]] if "const" in old else list(old["enum"])
            for value in values:
                if not any(_admits_value(b, value) for b in new_branches):
                    out.append(f"{where}: value {value!r} is no longer accepted")
            continue
        candidates = _accepts_type(new_branches, old_type)
        if not candidates:
            out.append(f"{where}: type {old_type!r} is no longer accepted (narrowed)")
            continue
        new = candidates[0]
        if "enum" in new or "const" in new:
            out.append(f"{where}: {old_type} narrowed to a fixed set of values")
            continue
        _compare_constraints(old, new, where, out)
        if old_type == "object":
            _compare_object(old, old_root, new, new_root, path, out)
        elif old_type == "array" and "items" in old:
            _compare(old["items"], old_root, new.get("items", {}), new_root, f"{path}[]", out)


def _admits_value(branch: Schema, value: Any) -> bool:
    if "const" in branch:
        return bool(branch["const"] == value)
    if "enum" in branch:
        return value in branch["enum"]
    types = _types(branch)
    kind = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}.get(type(value))
    return "any" in types or kind in types or (kind == "integer" and "number" in types)


def _compare_constraints(old: Schema, new: Schema, where: str, out: list[str]) -> None:
    for key in _TIGHTER_IF_LARGER:
        if key in new and (key not in old or new[key] > old[key]):
            out.append(f"{where}: {key} tightened to {new[key]}")
    for key in _TIGHTER_IF_SMALLER:
        if key in new and (key not in old or new[key] < old[key]):
            out.append(f"{where}: {key} tightened to {new[key]}")
    for key in ("pattern", "format"):
        if key in new and new.get(key) != old.get(key):
            out.append(f"{where}: {key} changed to {new[key]!r}")


def _compare_object(old: Schema, old_root: Schema, new: Schema, new_root: Schema, path: str,
                    out: list[str]) -> None:
    old_props: dict[str, Schema] = old.get("properties", {})
    new_props: dict[str, Schema] = new.get("properties", {})
    for name, old_prop in old_props.items():
        child = f"{path}.{name}" if path else name
        if name not in new_props:
            out.append(f"{child}: field removed or renamed")
            continue
        _compare(old_prop, old_root, new_props[name], new_root, child, out)
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        child = f"{path}.{name}" if path else name
        out.append(f"{child}: field is now required")
    old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
    if isinstance(old_extra, dict) and isinstance(new_extra, dict):
        _compare(old_extra, old_root, new_extra, new_root, f"{path}{{*}}", out)
    elif old_extra is not False and new_extra is False and not old_props:
        out.append(f"{path or '(root)'}: additional properties no longer allowed")
