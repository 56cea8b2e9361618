"""What the operator CLI shows of personal data by default: masked. Which fields are personal comes from the
contract (fields made with `contract.envelope.personal_data`, marked `x-personal-data` in each event type's JSON
Schema), never from a list kept here; a value that is no event of the contract is masked by what it looks like
(addresses anywhere, the contract's personal keys wherever they stand). Masked values keep what helps to debug
without naming anyone: an address its first character and its domain (`j•••@example.com`), any other value `•••`,
None stays None. Pure: no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from .contract import EVENT_TYPES
from .contract.envelope import EMAIL_PATTERN

MASK = "•••"
PERSONAL = "x-personal-data"
# Path steps that stand for any element of a list, any value of a map.
LIST_ITEM, MAP_VALUE = "[]", "{}"
Path = tuple[str, ...]

_ADDRESS = re.compile(EMAIL_PATTERN)
# An address inside any text (a reason, a raw value's string): no spaces, quotes, brackets or slashes around it.
_ADDRESS_IN_TEXT = re.compile(r"[^\s\"'<>()\[\]{},;:@/\\]+@[^\s\"'<>()\[\]{},;:@/\\]+")


def _walk_schema(schema: dict[str, Any]) -> set[Path]:
    """The paths (from the event's top) of every node marked personal in one event type's JSON Schema: through
    $refs (each once per branch: recursive models end), unions, list items (LIST_ITEM) and map values
    (MAP_VALUE)."""
    defs: dict[str, Any] = schema.get("$defs", {})
    found: set[Path] = set()

    def walk(node: Any, path: Path, refs: frozenset[str]) -> None:
        if not isinstance(node, dict):
            return
        if node.get(PERSONAL) is True:
            found.add(path)
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in refs and name in defs:
                walk(defs[name], path, refs | {name})
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for branch in node.get(key) or ():
                walk(branch, (*path, LIST_ITEM) if key == "prefixItems" else path, refs)
        for name, child in (node.get("properties") or {}).items():
            walk(child, (*path, name), refs)
        walk(node.get("additionalProperties"), (*path, MAP_VALUE), refs)
        walk(node.get("items"), (*path, LIST_ITEM), refs)

    walk(schema, (), frozenset())
    return found


@cache
def personal_paths(type_name: str) -> frozenset[Path]:
    """Where an event of `type_name` holds personal data (computed once per type, from its JSON Schema)."""
    return frozenset(_walk_schema(EVENT_TYPES[type_name].model_json_schema()))


@cache
def _prefixes(type_name: str) -> frozenset[Path]:
    return frozenset(path[:n] for path in personal_paths(type_name) for n in range(len(path) + 1))


@cache
def personal_keys() -> frozenset[str]:
    """The names of the contract's personal fields, any event type's: what a value that is no event is masked by."""
    return frozenset(path[-1] for name in EVENT_TYPES for path in personal_paths(name)
                     if path and path[-1] not in (LIST_ITEM, MAP_VALUE))


def mask_address(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}{MASK}@{domain}"


def mask_text(text: str) -> str:
    """A personal text: an address keeps its first character and its domain, anything else is `•••`."""
    return mask_address(text) if _ADDRESS.fullmatch(text) else MASK


def mask_value(value: Any) -> Any:
    """A personal value, whole: every text and number in it masked; None, a map's keys and a list's length kept."""
    if value is None:
        return None
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_value(item) for item in value]
    return MASK


def mask_addresses_in(text: str) -> str:
    """`text` with every address-like part in it masked (the rest as it is)."""
    return _ADDRESS_IN_TEXT.sub(lambda found: mask_address(found.group()), text)


def _masked(value: Any, here: frozenset[Path], paths: frozenset[Path], prefixes: frozenset[Path]) -> Any:
    """`value` at the schema paths `here` (a map's key is a property's name or any map value): what the paths
    mark personal masked whole; in the rest, every address-like text (what the contract does not mark, a list
    of test recipients say, is still no one's to read)."""
    if here & paths:
        return mask_value(value)
    if isinstance(value, str):
        return mask_addresses_in(value)
    if isinstance(value, dict):
        return {mask_addresses_in(str(key)): _masked(item, _within(here, (str(key), MAP_VALUE), prefixes), paths,
                                                     prefixes)
                for key, item in value.items()}
    if isinstance(value, list):
        inner = _within(here, (LIST_ITEM,), prefixes)
        return [_masked(item, inner, paths, prefixes) for item in value]
    return value


def _within(here: frozenset[Path], steps: Iterable[str], prefixes: frozenset[Path]) -> frozenset[Path]:
    return frozenset(path for path in ((*p, step) for p in here for step in steps) if path in prefixes)


def mask_event(data: dict[str, Any]) -> dict[str, Any]:
    """An event as JSON (`model_dump(mode="json")`) with its personal data masked: the fields its type's schema
    marks, and any address-like text elsewhere."""
    type_name = data.get("type")
    known = isinstance(type_name, str) and type_name in EVENT_TYPES
    paths = personal_paths(type_name) if known else frozenset()
    prefixes = _prefixes(type_name) if known else frozenset()
    masked: dict[str, Any] = _masked(data, frozenset({()}) if paths else frozenset(), paths, prefixes)
    return masked


def _by_keys(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {key: mask_value(item) if key in keys else _by_keys(item, keys) for key, item in value.items()}
    if isinstance(value, list):
        return [_by_keys(item, keys) for item in value]
    return value


def mask_raw(value: bytes | None) -> str:
    """A value that is no valid event (a dead letter, a record the contract refuses), for people: its JSON with
    every field named as a personal field of the contract masked (an event type's own paths first, when its `type`
    is one), and every address-like text; what is not JSON only as its length, never its bytes."""
    raw = value or b""
    try:
        data = json.loads(raw)
        if isinstance(data, dict):
            data = mask_event(data)
        shown = _by_keys(data, personal_keys()) if isinstance(data, dict | list) else data
        return json.dumps(_masked(shown, frozenset(), frozenset(), frozenset()), separators=(",", ":"),
                          ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError), or nested too deep
        return f"<{len(raw)} bytes, not JSON: not shown>"
