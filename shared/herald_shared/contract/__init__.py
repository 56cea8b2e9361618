"""The public event contract: every event type by name, and parsing of raw Kafka values into events."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from . import billing, campaigns, compliance, delivery, subscriptions
from .envelope import Event, Payload

__all__ = ["EVENT_TYPES", "Event", "InvalidEvent", "Payload", "event_class", "parse_event", "serialize_event"]


def _collect() -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    for module in (subscriptions, campaigns, delivery, compliance, billing):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Event) and "type" in value.model_fields:
                default = value.model_fields["type"].default
                if isinstance(default, str) and value.__module__ == module.__name__:
                    found[default] = value
    return dict(sorted(found.items()))


# Every event type of the contract, by its `type` name.
EVENT_TYPES: dict[str, type[Event]] = _collect()


class InvalidEvent(ValueError):
    """A raw message that is not a valid event of the contract; `reason` goes to the dead-letter entry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def event_class(type_name: str) -> type[Event]:
    try:
        return EVENT_TYPES[type_name]
    except KeyError:
        raise InvalidEvent(f"unknown event type {type_name!r}") from None


def _summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item["loc"]) or "(event)"
        parts.append(f"{location}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_event(raw: bytes | str | dict[str, Any]) -> Event:
    """Validate a raw value against the contract. Raises InvalidEvent with a readable reason."""
    if isinstance(raw, dict):
        data: Any = raw
    else:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"an event is a JSON object, got {type(data).__name__}")
    type_name = data.get("type")
    if not isinstance(type_name, str):
        raise InvalidEvent("missing or non-string 'type'")
    cls = event_class(type_name)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {type_name}: {_summarise(exc)}") from None


def serialize_event(event: Event) -> bytes:
    return event.model_dump_json().encode()
