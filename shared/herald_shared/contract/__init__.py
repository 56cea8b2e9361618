"""The public event contract: every event type by name, and parsing of raw Kafka values into events."""

from __future__ import annotations

import json
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

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
        location = ".".join(str(p) for p in item["loc"][1:]) or "(event)"
        parts.append(f"{location}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


# One pass in pydantic-core: JSON parsing and validation of the type the `type` field names.
_ANY_EVENT: TypeAdapter[Event] = TypeAdapter(
    Annotated[Union[tuple(EVENT_TYPES.values())], Field(discriminator="type")]  # type: ignore[arg-type]  # noqa: UP007
)


def parse_event(raw: bytes | str | dict[str, Any]) -> Event:
    """Validate a raw value against the contract. Raises InvalidEvent with a readable reason. No text in an
    event may hold a NUL character: the read models' store (PostgreSQL's jsonb, under FerretDB) cannot keep
    one, so such an event could never be folded and would hold its partition back for good."""
    try:
        if isinstance(raw, dict):
            event = _ANY_EVENT.validate_python(raw)
            escaped_nul = _holds_nul(raw)
        else:
            event = _ANY_EVENT.validate_json(raw)
            escaped_nul = (b"\\u0000" in raw if isinstance(raw, bytes) else "\\u0000" in raw) and \
                _holds_nul(json.loads(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        kind = first["type"]
        if kind == "json_invalid":
            raise InvalidEvent(f"not JSON: {first['msg']}") from None
        if kind in ("dict_type", "model_type", "model_attributes_type"):
            raise InvalidEvent("an event is a JSON object") from None
        if kind == "union_tag_not_found":
            raise InvalidEvent("missing or non-string 'type'") from None
        if kind == "union_tag_invalid":
            raise InvalidEvent(f"unknown event type {first.get('ctx', {}).get('tag')!r}") from None
        raise InvalidEvent(f"invalid {first['loc'][0]}: {_summarise(exc)}") from None
    except (OverflowError, RecursionError) as exc:  # what pydantic does not turn into a ValidationError
        raise InvalidEvent(f"cannot be read: {type(exc).__name__}: {exc}") from None
    if escaped_nul:
        raise InvalidEvent("a text holds a NUL character (\\u0000), which no read model can store")
    return event


def _holds_nul(value: Any) -> bool:
    """Whether a NUL character is in any string of a JSON value (keys too)."""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def serialize_event(event: Event) -> bytes:
    return event.model_dump_json().encode()
