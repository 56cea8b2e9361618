"""Stand-ins for the sender's ports in delivery's unit tests (pure logic only: the integration tests talk to a real
relay, broker and store)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from herald_delivery.domain import SmtpReply
from herald_shared.contract import Event


class Relay:
    """Accepts every message, keeping (recipient, data) of each; `on_first` runs while the first message is in its
    SMTP transaction."""

    def __init__(self, on_first: Callable[[], Awaitable[None]] | None = None) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.on_first = on_first

    @property
    def recipients(self) -> list[str]:
        return [recipient for recipient, _ in self.sent]

    async def send(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        self.sent.append((recipient, data))
        if len(self.sent) == 1 and self.on_first is not None:
            await self.on_first()
        return SmtpReply(250, "2.0.0 OK")


class Publisher:
    """Keeps what it is given to publish, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)
