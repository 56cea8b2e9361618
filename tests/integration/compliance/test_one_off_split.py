"""On the real broker: a list sent once, deleted and re-created as two lists of 50 (each sent once) is one-off
sending all the same (PRODUCT.md, "Lists are persistent"): the warning names both new lists. An account whose new
lists hold other people is not warned."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.delivery import MessageSent
from herald_shared.contract.subscriptions import ListDeleted
from tests.conftest import eventually

from .conftest import Bus, Running, counts_of, env_of, new_list

EVERYONE = range(100)


def blast(account_id: str, list_id: str, campaign: str, people: Iterable[int], at: datetime) -> list[Event]:
    return [MessageSent(**env_of(account_id, at=at), payload={  # type: ignore[arg-type]
        "message_id": f"{campaign}-m{i}", "campaign_id": campaign, "subscriber_id": f"{list_id}-s{i}",
        "list_id": list_id, "recipient_domain": "example.com", "smtp_code": 250}) for i in people]


async def sent_counted(running: Running, account_id: str, campaigns: dict[str, int]) -> None:
    async def counted() -> dict[str, int | None]:
        rates = await running.rates(account_id)
        return {c: (counts_of(rates, c) or {}).get("sent") for c in campaigns}
    await eventually(counted, lambda seen: seen == campaigns, what=f"{account_id}: {campaigns} counted")


async def list_read(running: Running, account_id: str, list_id: str, *, members: int = 0,
                    deleted: bool = False) -> None:
    async def record() -> Any:
        return running.service.lists.get(f"{account_id}|{list_id}")
    await eventually(record, lambda r: r is not None and len(r["k"]) >= members and (r["d"] is not None) == deleted,
                     what=f"{account_id}: {list_id} read")


async def one_off_warnings(bus: Bus, account_id: str) -> list[dict[str, Any]]:
    return [w["payload"]["evidence"] for w in await bus.compliance_events("AccountWarned")
            if w["account_id"] == account_id and w["payload"]["metric"] == "one_off_sending"]


async def test_a_list_re_created_as_two_halves_is_flagged_and_other_people_are_not(start_compliance: Any,
                                                                                  bus: Bus) -> None:
    running = await start_compliance()
    hours = [datetime.now(UTC) - timedelta(hours=10) + timedelta(hours=h) for h in range(10)]
    halves = {"split": (range(50), range(50, 100)), "other": (range(1_000, 1_050), range(2_000, 2_050))}
    for account in halves:
        await bus.publish(*new_list(account, "jan", EVERYONE, hours[0]),
                          *blast(account, "jan", "c-jan", EVERYONE, hours[1]))
    for account in halves:
        await sent_counted(running, account, {"c-jan": 100})
        await bus.publish(ListDeleted(**env_of(account, "subscriptions", hours[2]),  # type: ignore[arg-type]
                                      payload={"list_id": "jan", "members_at_deletion": 100}))
    for account, (first, _) in halves.items():
        await list_read(running, account, "jan", members=100, deleted=True)
        await bus.publish(*new_list(account, "feb-a", first, hours[3]),
                          *blast(account, "feb-a", "c-a", first, hours[4]))
    for account, (_, second) in halves.items():
        await list_read(running, account, "feb-a", members=50)
        await bus.publish(*new_list(account, "feb-b", second, hours[5]),
                          *blast(account, "feb-b", "c-b", second, hours[6]))

    [evidence] = await eventually(lambda: one_off_warnings(bus, "split"), lambda w: len(w) >= 1,
                                  what="split: one-off sending flagged")
    assert evidence["reason"] == "list_deleted" and evidence["deleted_list_id"] == "jan"
    assert evidence["new_list_ids"] == "feb-a,feb-b" and evidence["new_lists"] == 2
    # Judged as the second half's members arrive, in whatever batches the consumer reads: warned once, at the batch
    # whose union first reaches 80% (all of it when the half came in one batch).
    assert evidence["shared_fraction"] >= 0.8 and 80 <= evidence["new_list_members"] <= 100
    # The other account's lists all read and judged (its campaigns counted come after their members' batches).
    await list_read(running, "other", "feb-b", members=50)
    await sent_counted(running, "other", {"c-jan": 100, "c-a": 50, "c-b": 50})
    await sent_counted(running, "split", {"c-jan": 100, "c-a": 50, "c-b": 50})
    assert await one_off_warnings(bus, "other") == []
    assert len(await one_off_warnings(bus, "split")) == 1
