"""Generates the published contract: one JSON Schema per event and one AsyncAPI 3.0 document for all topics."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from . import EVENT_TYPES, Event
from .envelope import FORMAT_RULES
from .upcasting import UPCASTERS

# shared/schemas/ in a source checkout; the generated files are committed there.
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_ID_BASE = "https://herald.dev/schemas/events/"
ENVELOPE_REQUIRED = ["event_id", "type", "schema_version", "occurred_at", "account_id", "producer", "payload"]


def schema_filename(cls: type[Event]) -> str:
    return f"{cls.model_fields['type'].default}.v{cls.version}.schema.json"


def event_schema(cls: type[Event]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event as it appears on the wire."""
    schema = cls.model_json_schema()
    props = schema["properties"]
    props["schema_version"] = {"const": cls.version, "title": "Schema Version",
                               "description": props["schema_version"].get("description", "")}
    schema["required"] = ENVELOPE_REQUIRED
    _describe_formats(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID_BASE + schema_filename(cls),
        **schema,
        "x-topic": cls.topic,
        "x-kafka-key": "account_id",
    }


def _describe_formats(node: Any) -> None:
    """Add to the description of every node of a format what Herald's parser makes of it (FORMAT_RULES), after
    the field's own description where there is one: the format alone says less than the parser refuses."""
    if isinstance(node, dict):
        form = node.get("format")
        rules = FORMAT_RULES.get(form) if isinstance(form, str) else None
        if rules is not None:
            node["description"] = f"{node['description'].rstrip('.')}. {rules}" if node.get("description") else rules
        for value in node.values():
            _describe_formats(value)
    elif isinstance(node, list):
        for value in node:
            _describe_formats(value)


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _move_defs(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Hoist $defs into AsyncAPI components.schemas and point the refs there."""
    schema = copy.deepcopy(schema)
    for name, definition in schema.pop("$defs", {}).items():
        existing = components.get(name)
        if existing is not None and existing != definition:
            raise ValueError(f"two different schemas are both named {name!r}; rename one payload class")
        components[name] = definition

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else rewrite(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name in list(components):
        components[name] = rewrite(components[name])
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    return rewrite(schema)  # type: ignore[no-any-return]


def asyncapi_document() -> dict[str, Any]:
    from ..topics import EVENT_TOPICS, events_of

    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in EVENT_TOPICS:
        channel_id = spec.owner
        channel_messages = {}
        for cls in events_of(spec.name):
            name = cls.model_fields["type"].default
            schemas[name] = _move_defs(event_schema(cls), schemas)
            messages[name] = {
                "name": name,
                "title": name,
                "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else name,
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{name}"},
                "headers": {"$ref": "#/components/schemas/HeraldHeaders"},
                "bindings": {"kafka": {"key": {"type": "string", "description": "account_id"},
                                       "bindingVersion": "0.5.0"}},
                "x-schema-version": cls.version,
            }
            channel_messages[name] = {"$ref": f"#/components/messages/{name}"}
        channels[channel_id] = {
            "address": spec.name,
            "description": spec.description,
            "messages": channel_messages,
            "bindings": {"kafka": {"partitions": spec.partitions, "bindingVersion": "0.5.0",
                                   "topicConfiguration": {"retention.ms": spec.retention_ms,
                                                          "cleanup.policy": [spec.cleanup_policy]}}},
        }
        dlq = spec.dead_letter
        channels[channel_id + "DeadLetters"] = {
            "address": dlq.name,
            "description": dlq.description,
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
            "bindings": {"kafka": {"partitions": dlq.partitions, "bindingVersion": "0.5.0",
                                   "topicConfiguration": {"retention.ms": dlq.retention_ms,
                                                          "cleanup.policy": [dlq.cleanup_policy]}}},
        }
        operations[f"{channel_id}Publishes"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"The {spec.owner} service publishes its events, keyed by account_id.",
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in channel_messages],
        }
        for consumer in spec.consumers:
            operations[f"{consumer}Consumes{channel_id.title()}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"The {consumer} service consumes {spec.name}.",
            }
    schemas["HeraldHeaders"] = {
        "type": "object",
        "description": "Kafka headers on every event; the value is authoritative, headers help routing.",
        "properties": {"type": {"type": "string"}, "schema_version": {"type": "string"},
                       "event_id": {"type": "string"}, "producer": {"type": "string"},
                       "herald.replayed_from": {"type": "string", "description": (
                           "Only on a record `herald dlq replay` wrote: the dead-letter entry it came from, as "
                           "<dead-letter topic>:<partition>:<offset>. The entry's other headers are carried over "
                           "but for its herald.dlq.* ones.")}},
    }
    from_topic = ["herald.dlq.source_topic", "herald.dlq.source_partition", "herald.dlq.source_offset"]
    schemas["DeadLetterHeaders"] = {
        "type": "object",
        "description": "Why and from where a message was dead-lettered; the value is the original raw bytes. "
                       "A record read from a topic is located by its topic, partition and offset; a message "
                       "that came from no topic (a mail the inbound SMTP server received, an outcome the sender "
                       "could not make its event) names its origin instead, and is replayed to the topic whose "
                       "dead-letter topic holds it.",
        "properties": {
            "herald.dlq.reason": {"type": "string", "description": "Why, for people."},
            "herald.dlq.source_topic": {"type": "string", "description": "The topic the record was read from."},
            "herald.dlq.source_partition": {"type": "string", "description": "Its partition, in decimal."},
            "herald.dlq.source_offset": {"type": "string", "description": "Its offset, in decimal."},
            "herald.dlq.origin": {"type": "string", "description": (
                "What the message came from when it was read from no topic, e.g. inbound-smtp, sender.")},
            "herald.dlq.consumer": {"type": "string", "description": "What failed on it (a consumer group)."},
            "herald.dlq.failed_at": {"type": "string", "description": "When, ISO 8601 in UTC."},
            "herald.inbound.recipients": {"type": "string", "description": (
                "Only on a mail the inbound SMTP server received (origin inbound-smtp): its envelope recipients, "
                "comma-separated, UTF-8 (undecodable bytes as backslash escapes), at most 1,000 bytes.")},
        },
        "required": ["herald.dlq.reason"],
        "oneOf": [{"required": from_topic}, {"required": ["herald.dlq.origin"]}],
    }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "A message that failed to parse, validate or be handled, kept byte for byte.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"type": "string", "format": "binary"},
        "bindings": {"kafka": {"key": {"type": "string", "description": (
            "The key of the record dead-lettered (its account_id, or whatever a producer sent); for an entry from "
            "no topic, the account_id of the outcome the sender could not publish (origin sender), or the bytes "
            "'inbound' for a mail the inbound SMTP server received (origin inbound-smtp), whose account is not "
            "known. `herald dlq replay` keys a replayed event by its account_id.")},
            "bindingVersion": "0.5.0"}},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Herald events",
            "version": "1.0.0",
            "description": "Every event of Herald's services. Topics are keyed by account_id; each event "
                           "carries the envelope (event_id, type, schema_version, occurred_at, account_id, "
                           "producer, correlation_id, causation_id) and a typed payload.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka",
                              "description": "The single-node broker started by scripts/stack."}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def expected_files() -> dict[str, str]:
    """Relative path → content of every generated file."""
    files = {f"events/{schema_filename(cls)}": render(event_schema(cls)) for cls in EVENT_TYPES.values()}
    files["asyncapi.json"] = render(asyncapi_document())
    return files


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Generated files that are missing or differ on disk, and files on disk the contract no longer makes."""
    expected = expected_files()
    stale = [rel for rel, text in expected.items()
             if not (directory / rel).is_file() or (directory / rel).read_text() != text]
    on_disk = {str(p.relative_to(directory)) for p in directory.rglob("*.json")} if directory.exists() else set()
    return sorted(stale + [rel for rel in on_disk - set(expected) if rel.startswith("events/")
                           and _is_current_version_of_missing(rel)])


def _is_current_version_of_missing(rel: str) -> bool:
    # Older versions of an event (X.v1 when X is at v2) stay published; a file for an unknown type is stale.
    name = Path(rel).name.split(".v")[0]
    return name not in EVENT_TYPES


class IncompatibleChange(Exception):
    """A committed schema would change incompatibly without a schema_version bump."""


def upcaster_gaps() -> list[str]:
    """What `upcasting.UPCASTERS` lacks for the contract's versions (a bump without its upcaster would make
    every earlier event of the type unreadable), or holds for no type's version."""
    return UPCASTERS.missing(EVENT_TYPES)


def write_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write what is missing or changed; refuse to rewrite a published event schema incompatibly, and a version
    bump whose earlier versions no upcaster reads."""
    from .compat import incompatibilities

    if gaps := upcaster_gaps():
        raise IncompatibleChange("events of an earlier schema_version would be unreadable; register an upcaster "
                                 "(herald_shared.contract.upcasting) for:\n  " + "\n  ".join(gaps))
    written = []
    for rel, text in expected_files().items():
        path = directory / rel
        if not path.is_file() or path.read_text() != text:
            if path.is_file() and rel.startswith("events/"):
                problems = incompatibilities(json.loads(path.read_text()), json.loads(text))
                if problems:
                    raise IncompatibleChange(
                        f"{rel} would change incompatibly; bump the event's `version` instead:\n  "
                        + "\n  ".join(problems))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(rel)
    return written
