"""Issue 19, "Faults": the relay answers 421 and 451, then 550, then drops connections, then is slow (seconds
per reply). Invariant: every active subscriber gets the campaign exactly once, or is bounced once and never
tried again; nothing is lost and nothing doubled, and the campaign's end counts every message once."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import REGISTRY

from herald_shared.contract import Event
from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageBounced, MessageDeferred, MessageSent
from tests.samples import campaign_queued

from .conftest import World

CLOSING = "421 4.3.2 Service not available, closing transmission channel"
GREYLISTED = "451 4.7.1 Greylisted, try again later"
SLOW_REPLY = 1.5  # seconds before each accepted message is answered (the client's timeout is far longer)


async def send_campaign(world: World, audience: list[str]) -> list[Event]:
    """Campaign c1 of an approved account to these addresses (subscribers s0, s1...): delivery's events once it
    has ended."""
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", address) for i, address in enumerate(audience)])
    await world.publish(campaign_queued("acme", "c1"))
    return await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es),
                                "the campaign's end", within=90)


async def test_421_and_451_then_550_then_dropped_connections_then_a_slow_relay_send_each_message_once(
        start_delivery: Any, relay: Any, world: World) -> None:
    willing = [f"reader{i}@example.org" for i in range(4)]
    relay.behaviour.script = {
        # Refused for now at the envelope and at the data, then the connection dropped: sent on the 4th attempt.
        **{address: [("rcpt", CLOSING), ("data", GREYLISTED), ("data", "drop")] for address in willing},
        "policy@example.org": [("rcpt", CLOSING), ("data", GREYLISTED), ("data", "550 5.7.1 Refused by policy")],
        "nobody@example.org": [("rcpt", "550 5.1.1 <nobody@example.org>: Recipient address rejected")],
    }
    relay.behaviour.delay = SLOW_REPLY
    await start_delivery()
    events = await send_campaign(world, [*willing, "policy@example.org", "nobody@example.org"])
    assert Counter(relay.recipients()) == Counter(willing), "each willing recipient exactly once, no one else"
    sent = [e for e in events if isinstance(e, MessageSent)]
    assert sorted(str(e.payload.subscriber_id) for e in sent) == ["s0", "s1", "s2", "s3"]
    assert {e.payload.attempt for e in sent} == {4}
    bounced = {e.payload.subscriber_id: e.payload for e in events if isinstance(e, MessageBounced)}
    assert len(bounced) == len([e for e in events if isinstance(e, MessageBounced)]) == 2
    assert (bounced["s4"].smtp_code, bounced["s4"].source) == (550, "smtp_reply")
    assert (bounced["s5"].smtp_code, bounced["s5"].bounce_class) == (550, "hard")
    tried = Counter(address for address, _ in relay.attempts)
    assert tried["policy@example.org"] == 3 and tried["nobody@example.org"] == 1, "a 5xx is never tried again"
    end, = [e.payload for e in events if isinstance(e, CampaignDeliveryFinished)]
    assert (end.recipients, end.sent, end.bounced) == (6, 4, 2)


async def test_a_relay_slower_than_the_command_timeout_gets_each_message_once(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Invariant: a relay that takes longer to answer the end of DATA than any other command is waited for (RFC
    5321 4.5.3.2.6 asks for 10 minutes there), so each message goes exactly once, at the first attempt. Giving
    up after the command timeout would leave the outcome unknown and send the message again."""
    readers = [f"reader{i}@example.org" for i in range(3)]
    relay.behaviour.delay = 2.5
    await start_delivery(HERALD_SMTP_TIMEOUT=1.0)
    events = await send_campaign(world, readers)
    assert Counter(relay.recipients()) == Counter(readers)
    assert {e.payload.attempt for e in events if isinstance(e, MessageSent)} == {1}
    assert not [e for e in events if isinstance(e, MessageDeferred)]


async def test_a_relay_that_answers_the_end_of_data_too_late_gets_the_message_again_and_says_so(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Invariant: when the relay's answer to the end of DATA does not come within HERALD_SMTP_DATA_TIMEOUT, the
    outcome is unknown (RFC 1047): the message is deferred and sent again, never lost. It is the one way a
    recipient can get a second copy, and it is said so: the MessageDeferred names it and
    herald_delivery_unanswered_total counts it. Every other recipient gets the campaign exactly once."""
    readers = [f"reader{i}@example.org" for i in range(3)]
    relay.behaviour.script = {"reader0@example.org": [("data", "late:6.0")]}
    unanswered = REGISTRY.get_sample_value("herald_delivery_unanswered_total") or 0.0
    await start_delivery(HERALD_SMTP_DATA_TIMEOUT=2.0)  # the others' answers come in milliseconds
    events = await send_campaign(world, readers)
    assert Counter(relay.recipients()) == Counter({"reader0@example.org": 2, "reader1@example.org": 1,
                                                   "reader2@example.org": 1})
    deferred, = [e.payload for e in events if isinstance(e, MessageDeferred)]
    assert (deferred.subscriber_id, deferred.smtp_code, deferred.attempt) == ("s0", None, 1)
    assert "did not answer the end of DATA" in deferred.diagnostic and "sent again" in deferred.diagnostic
    sent = {e.payload.subscriber_id: e.payload.attempt for e in events if isinstance(e, MessageSent)}
    assert sent == {"s0": 2, "s1": 1, "s2": 1}
    assert REGISTRY.get_sample_value("herald_delivery_unanswered_total") == unanswered + 1
    end, = [e.payload for e in events if isinstance(e, CampaignDeliveryFinished)]
    assert (end.recipients, end.sent, end.bounced) == (3, 3, 0)
