"""The published contract (shared/schemas/): fresh, valid, describing the wire, and only changed compatibly."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from herald_shared.contract import EVENT_TYPES, serialize_event
from herald_shared.contract.compat import incompatibilities
from herald_shared.contract.publish import (
    SCHEMA_DIR,
    IncompatibleChange,
    asyncapi_document,
    event_schema,
    expected_files,
    schema_filename,
    stale_files,
    write_files,
)
from tests.samples import all_samples

REPO = SCHEMA_DIR.parents[1]


def test_committed_schemas_and_asyncapi_are_up_to_date() -> None:
    assert stale_files() == [], "run `herald schemas generate` and commit shared/schemas/"


@pytest.mark.parametrize("event", all_samples(), ids=lambda e: e.type)
def test_published_schema_accepts_the_event_as_serialised(event: Any) -> None:
    schema = json.loads((SCHEMA_DIR / "events" / schema_filename(type(event))).read_text())
    Draft202012Validator.check_schema(schema)
    errors = list(Draft202012Validator(schema).iter_errors(json.loads(serialize_event(event))))
    assert errors == []


def test_published_schema_rejects_what_the_contract_rejects() -> None:
    schema = event_schema(EVENT_TYPES["MessageBounced"])
    wire = json.loads(serialize_event(all_samples()[0]))
    assert list(Draft202012Validator(schema).iter_errors(wire)), "a ListCreated is not a MessageBounced"


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_asyncapi_document_describes_every_event_and_its_refs_resolve() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    assert set(EVENT_TYPES) <= set(document["components"]["messages"])
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        assert _resolve(document, ref) is not None, ref
    channel_addresses = {c["address"] for c in document["channels"].values()}
    assert {"herald.delivery", "herald.delivery.dlq", "herald.billing"} <= channel_addresses


def test_generator_refuses_an_incompatible_rewrite_of_a_published_version(tmp_path: Path) -> None:
    write_files(tmp_path)
    name = schema_filename(EVENT_TYPES["MessageBounced"])
    published = json.loads((tmp_path / "events" / name).read_text())
    published["$defs"]["MessageBouncedPayload"]["properties"]["legacy_field"] = {"type": "string"}
    (tmp_path / "events" / name).write_text(json.dumps(published))
    with pytest.raises(IncompatibleChange, match="legacy_field: field removed or renamed"):
        write_files(tmp_path)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout


def test_no_committed_schema_version_changed_incompatibly() -> None:
    """Every earlier commit of an event's schema file must be compatible with today's schema of that version.

    The file name carries the version (X.v1.schema.json), so an incompatible change needs a new file.
    """
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no history to compare the schemas with")
    current = expected_files()
    problems: dict[str, list[str]] = {}
    checked, with_history = 0, 0
    for rel, text in current.items():
        if not rel.startswith("events/"):
            continue
        path = f"shared/schemas/{rel}"
        commits = _git("log", "--format=%H", "--", path).split()
        with_history += bool(commits)
        for commit in commits:
            old = json.loads(_git("show", f"{commit}:{path}"))
            checked += 1
            found = incompatibilities(old, json.loads(text))
            if found:
                problems[f"{rel} (vs {commit[:10]})"] = found
    assert problems == {}, "bump the event's `version` instead of changing a published schema"
    if _git("log", "--format=%H", "-1", "--", "shared/schemas/events"):
        # A new event has no history yet; every other one must have been compared at least once.
        assert with_history > 0 and checked >= with_history
