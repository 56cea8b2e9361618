"""Events of an earlier schema_version, read as today's: an upcaster per (type, version) turns such an event's
payload into the next version's, so a fold from offset 0 still reads the history after an incompatible change
(README, "The event contract"). The events on the topics are never rewritten; a consumer reads them through the
chain. Register a step next to the event class whose `version` it follows:

    @upcaster("MessageSent", 1)
    def _message_sent_v1(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "kind": payload.get("kind", "campaign")}

`herald schemas generate` and `check` refuse a version bump whose chain has a gap (`Upcasters.missing`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .envelope import Event

# An earlier version's payload (decoded JSON) -> the next version's.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class NoUpcaster(LookupError):
    """An event of an earlier version that no chain of upcasters reads."""


class Upcasters:
    """The steps from each (type, version) to the version after it."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def add(step: Upcaster) -> Upcaster:
            if (type_name, from_version) in self._steps:
                raise ValueError(f"{type_name} v{from_version} already has an upcaster")
            self._steps[(type_name, from_version)] = step
            return step

        return add

    def missing(self, types: Mapping[str, type[Event]]) -> list[str]:
        """The steps an event type's version needs and lacks (`T v1 -> v2`), and steps of no such type or for a
        version the type has not reached."""
        gaps = [f"{name} v{old} -> v{old + 1}" for name, cls in types.items()
                for old in range(1, cls.version) if (name, old) not in self._steps]
        strays = [f"{name} v{old} -> v{old + 1} (no such type or version)" for name, old in self._steps
                  if name not in types or old >= types[name].version]
        return gaps + sorted(strays)

    def upcast(self, cls: type[Event], version: int, payload: dict[str, Any]) -> dict[str, Any]:
        """`payload` of `cls` at `version` (older than the class's) as the class's version holds it."""
        type_name = cls.model_fields["type"].default
        for old in range(version, cls.version):
            step = self._steps.get((type_name, old))
            if step is None:
                raise NoUpcaster(f"{type_name} schema_version {version} is older than this contract's "
                                 f"({cls.version}) and no upcaster reads v{old}")
            payload = step(payload)
        return payload


# The contract's own steps (every event type is at version 1 today, so none yet).
UPCASTERS = Upcasters()
upcaster = UPCASTERS.register
