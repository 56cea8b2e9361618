"""Is a new JSON Schema of an event compatible with the old one? Pure; used by the contract checks.

Compatible means both directions that matter for an event log:
- what a consumer built on the old schema reads is still there: no field removed or renamed;
- the new schema still reads every old event (projections are rebuilt from offset 0) and reads it the same:
  no type narrowed, no enum value dropped, no constraint tightened (a map's keys and `multipleOf` and
  `uniqueItems` too), no field newly required, no default of an optional field changed (an old event
  without the field would silently say the new default). A keyword this module does not compare, appearing
  or changing, counts as a narrowing: an unknown rule must be looked at, not let through.
Adding an optional field or widening a type is compatible in that sense, but not for a running consumer of
the old code: payloads refuse unknown fields (`additionalProperties: false`), so it dead-letters an event
carrying the new field (or a widened value). Deploy the consumers of a changed event before its producer;
whatever an old consumer dead-lettered meanwhile is replayed with `herald dlq replay` once it is upgraded.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

from .envelope import EMAIL_PATTERN, HTTP_URL_PATTERN, MAP_KEY_PATTERN, MAX_REQUEST_BYTES

Schema = dict[str, Any]

_TIGHTER_IF_LARGER = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
_TIGHTER_IF_SMALLER = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
# What a schema node may say that this module understands: compared below, or an annotation that accepts and
# refuses nothing. Anything else appearing or changing is reported.
_COMPARED = {"type", "const", "enum", "properties", "required", "additionalProperties", "items", "propertyNames",
             "patternProperties", "anyOf", "oneOf", "$ref", "format", "pattern", "multipleOf", "uniqueItems",
             *_TIGHTER_IF_LARGER, *_TIGHTER_IF_SMALLER}
_ANNOTATIONS = {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment",
                "$schema", "$id", "$defs", "discriminator"}
# A format whose every value is one of another's: the change widens. (JSON Schema's "email" is RFC 5321's ASCII
# address, "idn-email" RFC 6531's, which takes those and internationalised ones.)
_WIDER_FORMAT = {("email", "idn-email"), ("hostname", "idn-hostname"), ("uri", "iri")}
# The formats as every Herald parser has read them since the contract began (2ef9309): each `format: uri` field an
# AnyHttpUrl (http and https only, with a host), each address field email-validator's check without a quoted
# local part, an IP literal or a special-use domain (pydantic's EmailStr, then `envelope.checked_email`).
# Publishing that rule as the field's pattern, where the field already had the format and no pattern, refuses no
# event any Herald parser ever took, so it needs no new version. Sound only while every field published with such
# a format is read that way: tests/unit/shared/test_schema_says_what_the_parser_takes.py holds each to carry its
# pattern, so a field read otherwise cannot be published with the bare format first.
PARSED_FORMAT_PATTERNS = {"uri": HTTP_URL_PATTERN, "email": EMAIL_PATTERN, "idn-email": EMAIL_PATTERN}
# The other narrowing let through, older (README, "The event contract"): the keys of a free-form map published as
# what MongoDB and FerretDB can store; an event with another key could never be folded by any read model.
STORABLE_KEY_PATTERN = MAP_KEY_PATTERN
# A third: a text's maxLength brought down to no less than what one Kafka record holds (`MAX_REQUEST_BYTES`). Every
# character is at least one byte of the event's JSON, and the producer refuses a record over that many bytes before
# compression (aiokafka's and Kafka's own clients measure it so), so no event with a longer text was ever published:
# the bound refuses none that was. (Sound for events from producers at that limit: Herald's all are,
# `kafka.make_producer`; another would need a larger max.request.size and compression to pass the broker's 1 MiB.)
RECORD_BOUND_LENGTH = MAX_REQUEST_BYTES
_ABSENT = object()


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
        elif old_type == "array" and ("items" in old or "items" in new):  # none: items of any kind
            _compare(old.get("items", {}), old_root, new.get("items", {}), new_root, f"{path}[]", out)


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
        if key in new and (key not in old or new[key] < old[key]) and not (
                key == "maxLength" and new[key] >= RECORD_BOUND_LENGTH):
            out.append(f"{where}: {key} tightened to {new[key]}")
    if "multipleOf" in new and not _divides(new["multipleOf"], old.get("multipleOf")):
        out.append(f"{where}: multipleOf tightened to {new['multipleOf']}")
    if new.get("uniqueItems") is True and old.get("uniqueItems") is not True:
        out.append(f"{where}: uniqueItems now required")
    if "format" in new and new["format"] != old.get("format") and (old.get("format"), new["format"]) not in \
            _WIDER_FORMAT:
        out.append(f"{where}: format changed to {new['format']!r}")
    if "pattern" in new and not _same_pattern(old.get("pattern"), new["pattern"]) and not (
            "pattern" not in old and PARSED_FORMAT_PATTERNS.get(old.get("format", "")) == new["pattern"]):
        out.append(f"{where}: pattern changed to {new['pattern']!r}")
    for key in sorted(set(new) - _COMPARED - _ANNOTATIONS):
        if not key.startswith("x-") and not _same_json(old.get(key, _ABSENT), new[key]):
            out.append(f"{where}: {key} set to {new[key]!r}, which this check does not compare (read as a narrowing)")


def _divides(new: Any, old: Any) -> bool:
    """Whether every multiple of `old` is one of `new` (old None: any number, so never)."""
    if old is None:
        return False
    ratio = Fraction(str(old)) / Fraction(str(new))
    return ratio.denominator == 1


def _same_pattern(old: str | None, new: str) -> bool:
    """Equal as ECMA-262 reads them (JSON Schema's dialect), where `\\d` is `[0-9]` whatever the text."""
    return old is not None and _ascii_digits(old) == _ascii_digits(new)


def _ascii_digits(pattern: str) -> str:
    spelled, in_class, i = [], False, 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            pair = pattern[i:i + 2]
            spelled.append(("0-9" if in_class else "[0-9]") if pair == "\\d" else pair)
            i += 2
            continue
        if pattern[i] == "[":
            in_class = True
        elif pattern[i] == "]":
            in_class = False
        spelled.append(pattern[i])
        i += 1
    return "".join(spelled)


def _same_json(a: Any, b: Any) -> bool:
    # 0, 0.0 and False are equal in Python, not in JSON.
    if a is _ABSENT or b is _ABSENT:
        return a is b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


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
        old_default, new_default = old_prop.get("default", _ABSENT), new_props[name].get("default", _ABSENT)
        if name not in old.get("required", []) and not _same_json(old_default, new_default):
            out.append(f"{child}: default changed to {'none' if new_default is _ABSENT else repr(new_default)}"
                       " (an old event without the field would be read with it)")
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        child = f"{path}.{name}" if path else name
        out.append(f"{child}: field is now required")
    if "propertyNames" in new:
        old_names = _resolve(old.get("propertyNames", {"type": "string"}), old_root)
        if "pattern" not in old_names and _resolve(new["propertyNames"], new_root).get("pattern") == \
                STORABLE_KEY_PATTERN:
            old_names = {**old_names, "pattern": STORABLE_KEY_PATTERN}
        _compare(old_names, old_root, new["propertyNames"], new_root, f"{path}{{key}}", out)
    old_patterns: dict[str, Schema] = old.get("patternProperties", {})
    new_patterns: dict[str, Schema] = new.get("patternProperties", {})
    for key_pattern, new_values in new_patterns.items():
        old_key = next((k for k in old_patterns if _same_pattern(k, key_pattern)), None)
        if old_key is None:
            out.append(f"{path or '(root)'}: keys matching {key_pattern!r} now constrained")
        else:
            _compare(old_patterns[old_key], old_root, new_values, new_root, f"{path}{{{key_pattern}}}", out)
    for key_pattern, old_values in old_patterns.items():
        if any(_same_pattern(key_pattern, k) for k in new_patterns):
            continue
        if isinstance(new.get("additionalProperties"), dict):  # those keys' values are read as any other's now
            _compare(old_values, old_root, new["additionalProperties"], new_root, f"{path}{{{key_pattern}}}", out)
        elif new.get("additionalProperties") is False:
            out.append(f"{path or '(root)'}: keys matching {key_pattern!r} no longer allowed")
    old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
    old_open = old_extra in (None, True) and not old_props  # any key, any value
    if isinstance(new_extra, dict) and (isinstance(old_extra, dict) or old_open):
        _compare(old_extra if isinstance(old_extra, dict) else {}, old_root, new_extra, new_root, f"{path}{{*}}", out)
    elif old_extra is not False and new_extra is False and not old_props:
        out.append(f"{path or '(root)'}: additional properties no longer allowed")
