"""On the real broker: one-off sending (PRODUCT.md, "Lists are persistent") is flagged however it is dressed up.
A token second campaign to the old list before deleting it does not make it a list "sent twice"; a fresh list
with the same addresses for each blast is flagged without any deletion; the rule's own case still is, and a list
renamed and sent to again is not. Each phase waits until the processor has read it (its counts in the rates), so
the order in which it reads the two input topics cannot change the reason."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.delivery import MessageSent
from herald_shared.contract.subscriptions import ListDeleted, ListRenamed
from tests.conftest import eventually

from .conftest import Bus, Running, counts_of, env_of, new_list

EVERYONE = range(100)



def blast(account_id: str, list_id: str, campaign: str, people: Iterable[int], at: datetime) -> list[Event]:
    return [MessageSent(**env_of(account_id, at=at), payload={  # type: ignore[arg-type]
        "message_id": f"{campaign}-m{i}", "campaign_id": campaign, "subscriber_id": f"{list_id}-s{i}",
        "list_id": list_id, "recipient_domain": "example.com", "smtp_code": 250}) for i in people]


def deleted(account_id: str, list_id: str, at: datetime) -> ListDeleted:
    return ListDeleted(**env_of(account_id, "subscriptions", at),  # type: ignore[arg-type]
                       payload={"list_id": list_id, "members_at_deletion": 100})


async def sent_counted(running: Running, account_id: str, campaigns: dict[str, int]) -> None:
    async def counted() -> dict[str, int | None]:
        rates = await running.rates(account_id)
        return {c: (counts_of(rates, c) or {}).get("sent") for c in campaigns}
    await eventually(counted, lambda seen: seen == campaigns, what=f"{account_id}: {campaigns} counted")


async def one_off_warnings(bus: Bus, account_id: str) -> list[dict[str, Any]]:
    return [w["payload"]["evidence"] for w in await bus.compliance_events("AccountWarned")
            if w["account_id"] == account_id and w["payload"]["metric"] == "one_off_sending"]


async def test_a_token_second_send_before_the_deletion_does_not_hide_a_one_off(start_compliance: Any,
                                                                              bus: Bus) -> None:
    running = await start_compliance()
    hours = [datetime.now(UTC) - timedelta(hours=10) + timedelta(hours=h) for h in range(10)]
    for account in ("acc-control", "acc-two"):
        await bus.publish(*new_list(account, "jan", EVERYONE, hours[0]),
                          *blast(account, "jan", "c-jan", EVERYONE, hours[1]))
    await bus.publish(*blast("acc-two", "jan", "c-jan-tiny", [0], hours[2]))  # one recipient of the hundred
    await sent_counted(running, "acc-control", {"c-jan": 100})
    await sent_counted(running, "acc-two", {"c-jan": 100, "c-jan-tiny": 1})
    for account in ("acc-control", "acc-two"):
        await bus.publish(deleted(account, "jan", hours[3]))
    for account in ("acc-control", "acc-two"):
        await deletion_read(running, account, "jan")
        await bus.publish(*new_list(account, "feb", EVERYONE, hours[4]),
                          *blast(account, "feb", "c-feb", EVERYONE, hours[5]))

    for account in ("acc-two", "acc-control"):
        [evidence] = await flagged(bus, account, 1)
        assert evidence["reason"] == "list_deleted"
        assert evidence["deleted_list_id"] == "jan" and evidence["new_list_id"] == "feb"
        assert evidence["deleted_list_sends_counted"] == 1
    [two] = await one_off_warnings(bus, "acc-two")
    assert two["deleted_list_campaigns"] == "c-jan,c-jan-tiny" and two["deleted_list_campaigns_sent"] == 2


async def test_a_fresh_list_for_each_blast_is_flagged_and_a_renamed_list_is_not(start_compliance: Any,
                                                                               bus: Bus) -> None:
    running = await start_compliance()
    hours = [datetime.now(UTC) - timedelta(hours=10) + timedelta(hours=h) for h in range(10)]
    await bus.publish(*new_list("acc-keep", "jan", EVERYONE, hours[0]),
                      *blast("acc-keep", "jan", "c-jan", EVERYONE, hours[1]),
                      *new_list("acc-rename", "jan", EVERYONE, hours[0]),
                      *blast("acc-rename", "jan", "c-jan", EVERYONE, hours[1]),
                      ListRenamed(**env_of("acc-rename", "subscriptions", hours[2]),  # type: ignore[arg-type]
                                  payload={"list_id": "jan", "name": "feb"}))
    await sent_counted(running, "acc-keep", {"c-jan": 100})
    await bus.publish(*new_list("acc-keep", "feb", EVERYONE, hours[3]),
                      *blast("acc-keep", "feb", "c-feb", EVERYONE, hours[4]),
                      *blast("acc-rename", "jan", "c-feb", EVERYONE, hours[4]))
    await sent_counted(running, "acc-keep", {"c-jan": 100, "c-feb": 100})
    await bus.publish(*new_list("acc-keep", "mar", EVERYONE, hours[6]),
                      *blast("acc-keep", "mar", "c-mar", EVERYONE, hours[7]),
                      *blast("acc-rename", "jan", "c-mar", EVERYONE, hours[7]))

    warned = await flagged(bus, "acc-keep", 2)
    assert [(w["reason"], w["earlier_list_id"], w["new_list_id"]) for w in warned] == [
        ("list_recreated", "jan", "feb"), ("list_recreated", "feb", "mar")]
    # The share is the one when it was found, which depends on how the new list's members were batched.
    assert 0.8 <= warned[0]["shared_fraction"] <= 1.0 and warned[0]["earlier_list_sends_counted"] == 1
    # The renamed list's every campaign read (announcements are on the topic before the counts show): not flagged.
    await sent_counted(running, "acc-rename", {"c-jan": 100, "c-feb": 100, "c-mar": 100})
    await sent_counted(running, "acc-keep", {"c-jan": 100, "c-feb": 100, "c-mar": 100})
    assert await one_off_warnings(bus, "acc-rename") == []
    assert len(await one_off_warnings(bus, "acc-keep")) == 2


async def deletion_read(running: Running, account_id: str, list_id: str) -> None:
    async def record() -> Any:
        return running.service.lists.get(f"{account_id}|{list_id}")
    await eventually(record, lambda r: r is not None and r["d"] is not None, what=f"{account_id}: deletion read")


async def flagged(bus: Bus, account_id: str, n: int) -> list[dict[str, Any]]:
    return await eventually(lambda: one_off_warnings(bus, account_id), lambda w: len(w) >= n,
                            what=f"{account_id}: one-off sending flagged")
