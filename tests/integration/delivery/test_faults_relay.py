"""Issue 19, "Faults": the relay answers 421 and 451, then 550, then drops connections, then is slow (seconds
per reply). Invariant: every active subscriber gets the campaign exactly once, or is bounced once and never
tried again; nothing is lost and nothing doubled, and the campaign's end counts every message once."""

from __future__ import annotations

from collections import Counter
from typing import Any

from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageBounced, MessageSent
from tests.samples import campaign_queued

from .conftest import World

CLOSING = "421 4.3.2 Service not available, closing transmission channel"
GREYLISTED = "451 4.7.1 Greylisted, try again later"
SLOW_REPLY = 1.5  # seconds before each accepted message is answered (the client's timeout is far longer)


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
    await world.open_account("acme")
    audience = [*willing, "policy@example.org", "nobody@example.org"]
    await world.add_list("acme", "news", [(f"s{i}", address) for i, address in enumerate(audience)])
    await world.publish(campaign_queued("acme", "c1"))

    events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es),
                                  "the campaign's end", within=90)
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
