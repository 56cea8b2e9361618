"""The public event contract: every event type by name, and parsing of raw Kafka values into events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from . import billing, campaigns, compliance, delivery, subscriptions
from .envelope import UNKNOWN_VERSION, Event, Payload
from .upcasting import UPCASTERS, NoUpcaster, Upcasters, upcaster

__all__ = ["CONTRACT", "EVENT_TYPES", "UPCASTERS", "Contract", "Event", "InvalidEvent", "Payload", "Upcasters",
           "event_class", "parse_event", "serialize_event", "upcaster"]


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


# The validation context of an event read (from a record, a file, a store): its fields as written, none filled in
# from the work reading it (the envelope's `correlation_id`).
READ: dict[str, bool] = {"read": True}


class Contract:
    """Parsing raw values into events of a set of types, with the upcasters that read their earlier versions.
    `parse_event` is the contract's own (`EVENT_TYPES`, `upcasting.UPCASTERS`)."""

    def __init__(self, types: Mapping[str, type[Event]], upcasters: Upcasters) -> None:
        self.types, self.upcasters = types, upcasters
        # One pass in pydantic-core: JSON parsing and validation of the type the `type` field names.
        self._any: TypeAdapter[Event] = TypeAdapter(
            Annotated[Union[tuple(types.values())], Field(discriminator="type")]  # type: ignore[arg-type]  # noqa: UP007
        )

    def parse(self, raw: bytes | str | dict[str, Any]) -> Event:
        """Validate a raw value against the contract. Raises InvalidEvent with a readable reason. An event of an
        earlier schema_version is read through its upcasters (`upcasting`). No text in an event may hold a NUL
        character: the read models' store (PostgreSQL's jsonb, under FerretDB) cannot keep one, so such an event
        could never be folded and would hold its partition back for good."""
        try:
            if isinstance(raw, dict):
                event = self._any.validate_python(raw, context=READ)
                escaped_nul = _holds_nul(raw)
            else:
                event = self._any.validate_json(raw, context=READ)
                escaped_nul = (b"\\u0000" in raw if isinstance(raw, bytes) else "\\u0000" in raw) and \
                    _holds_nul(json.loads(raw))
        except ValidationError as exc:
            if any(error["type"] == UNKNOWN_VERSION for error in exc.errors()):
                try:
                    return self._earlier_version(raw, exc)
                except InvalidEvent:
                    raise
                except Exception as unread:  # whatever the record lacks: a reason, never a crash of the consumer
                    raise InvalidEvent(f"{_summarise(exc)}; cannot be read as an earlier version: "
                                       f"{type(unread).__name__}: {unread}") from None
            raise _invalid(exc) from None
        except (OverflowError, RecursionError) as exc:  # what pydantic does not turn into a ValidationError
            raise InvalidEvent(f"cannot be read: {type(exc).__name__}: {exc}") from None
        if escaped_nul:
            raise InvalidEvent(NUL_REFUSED)
        return event

    def _earlier_version(self, raw: bytes | str | dict[str, Any], refused: ValidationError) -> Event:
        """An event whose schema_version is not its type's: one of an earlier version, through its upcasters;
        any other (a later version, a gap in the chain) is refused as it was."""
        data = raw if isinstance(raw, dict) else json.loads(raw)
        cls = self.types[data["type"]]  # the discriminator matched: the type is known
        version, payload = _version_number(data.get("schema_version")), data.get("payload")
        if version is None or not 1 <= version < cls.version or not isinstance(payload, dict):
            raise _invalid(refused) from None
        try:
            upcast = {**data, "schema_version": cls.version, "payload": self.upcasters.upcast(cls, version, payload)}
        except NoUpcaster as exc:
            raise InvalidEvent(str(exc)) from None
        except Exception as exc:  # an upcaster that cannot read this payload: a reason, never a crash
            raise InvalidEvent(f"upcasting {data['type']} v{version}: {type(exc).__name__}: {exc}") from None
        try:
            event = self._any.validate_python(upcast, context=READ)
        except ValidationError as exc:
            raise InvalidEvent(f"{data['type']} v{version} upcast to v{cls.version}: {_summarise(exc)}") from None
        if _holds_nul(upcast):
            raise InvalidEvent(NUL_REFUSED)
        return event


def _version_number(value: Any) -> int | None:
    """A schema_version as the envelope reads it (an integer; its digits in a string, the lax reading)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


def _invalid(exc: ValidationError) -> InvalidEvent:
    first = exc.errors()[0]
    kind = first["type"]
    if kind == "json_invalid":
        return InvalidEvent(f"not JSON: {first['msg']}")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return InvalidEvent("an event is a JSON object")
    if kind == "union_tag_not_found":
        return InvalidEvent("missing or non-string 'type'")
    if kind == "union_tag_invalid":
        return InvalidEvent(f"unknown event type {first.get('ctx', {}).get('tag')!r}")
    return InvalidEvent(f"invalid {first['loc'][0]}: {_summarise(exc)}")


NUL_REFUSED = "a text holds a NUL character (\\u0000), which no read model can store"
CONTRACT = Contract(EVENT_TYPES, UPCASTERS)
parse_event = CONTRACT.parse


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
