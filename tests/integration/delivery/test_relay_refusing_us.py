"""Our own relay refusing to relay for Herald (Postfix answers its relay and sender restrictions at RCPT TO) is
the platform's configuration: every message is deferred and sent once the relay lets it through, none bounced
and no block counted; a receiver's spam refusal relayed back at the end of DATA stays a block."""

from __future__ import annotations

from collections import Counter
from typing import Any

from herald_delivery import metrics
from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageBounced, MessageDeferred, MessageSent
from tests.samples import campaign_queued

from .conftest import World

REFUSALS = [
    ("rcpt", "554 5.7.1 <{a}>: Relay access denied"),  # Postfix reject_unauth_destination
    ("rcpt", "553 5.7.1 <news@acme.example>: Sender address rejected: not owned by user herald"),
    ("rcpt", "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"),  # Exchange Online
    ("rcpt", "550 5.7.0 Mail relay denied [203.0.113.5]. Invalid credentials for relay for one of the domains"),
    ("data", "554 Message rejected: Email address is not verified. The following identities failed the check"),
    ("rcpt", "530 5.7.0 Authentication Required"),
]


def refused_count() -> float:
    return sum(metrics.RELAY_REFUSED.labels(stage)._value.get() for stage in ("mail", "rcpt", "data"))


async def test_our_relay_refusing_us_defers_every_message_and_blocks_nobody(
        start_delivery: Any, relay: Any, world: World) -> None:
    people = [f"r{i}@example.org" for i in range(12)]
    spam = "spam@example.org"
    script = {a: [(stage, text.format(a=a)) for stage, text in (REFUSALS[i % 6], REFUSALS[(i + 1) % 6])]
              for i, a in enumerate(people)}
    script[spam] = [("data", "550 5.7.1 message rejected as spam by the recipient's server")]
    relay.behaviour.script = script
    counted_before = refused_count()
    await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", a) for i, a in enumerate([*people, spam])])
    await world.publish(campaign_queued("acme", "c1"))
    events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es),
                                  "the campaign finished")
    outcomes = Counter(type(e).__name__ for e in events
                       if isinstance(e, MessageSent | MessageBounced | MessageDeferred))
    bounces = [e.payload for e in events if isinstance(e, MessageBounced)]
    assert [(b.bounce_class, b.diagnostic) for b in bounces] == [
        ("block", "550 5.7.1 message rejected as spam by the recipient's server")]
    assert outcomes == {"MessageDeferred": 2 * len(people), "MessageSent": len(people), "MessageBounced": 1}
    assert sorted(relay.recipients()) == sorted(people)  # one copy each, once the relay let it through
    assert refused_count() - counted_before == 2 * len(people)
