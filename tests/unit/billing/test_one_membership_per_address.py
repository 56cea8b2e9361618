"""One membership per address and list (`herald_shared.membership`) as billing counts it: an address added to a list
under several subscriber ids (a CRM's) is one stored subscriber, as subscriptions stores it, exactly under a replay
of what a crash left half written (`domain.add_membership`, `leave_address`: each decision taken on the address's
holder at the event's offset)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herald_billing import domain
from herald_billing.store import address_key
from herald_shared.contract.subscriptions import SubscriberAdded, SubscriberErased
from herald_shared.membership import holder

AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
ANN, BOB = "ann@example.net", "bob@example.net"


def sha256(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def added(subscriber_id: str, list_id: str = "news", email: str = ANN) -> SubscriberAdded:
    return SubscriberAdded.model_validate({"account_id": "acme", "producer": "crm", "occurred_at": AT, "payload": {
        "list_id": list_id, "subscriber_id": subscriber_id, "email": email, "email_sha256": sha256(email),
        "opt_in": "single", "consent": {"source": "import", "method": "crm sync", "collected_at": AT.isoformat()}}})


def erased(subscriber_id: str) -> SubscriberErased:
    return SubscriberErased.model_validate({"account_id": "acme", "producer": "crm", "occurred_at": AT, "payload": {
        "subscriber_id": subscriber_id, "email_sha256": sha256(ANN), "requested_by": "account"}})


Folded = SubscriberAdded | SubscriberErased


@dataclass
class Store:
    """What billing's fold keeps of one account's members, as `store.BillingProjection._count` keeps it: the
    subscribers counted (with the offset counted through, `readmodel.Counters`), the addresses' holders and the
    member documents; written in that order."""

    subscribers: int = 0
    through: int = -1
    addresses: dict[str, Any] = field(default_factory=dict)
    members: dict[str, Any] = field(default_factory=dict)


def fold(store: Store, batch: list[tuple[int, Folded]], written: int = 3) -> Store:
    """The batch folded over what the store holds; `written`: how many of its collections the flush wrote before a
    crash (counters, then addresses, then members)."""
    subscribers, through = store.subscribers, store.through
    addresses, members = dict(store.addresses), dict(store.members)
    for offset, event in batch:
        key = event.payload.subscriber_id
        member = members.get(key)
        if isinstance(event, SubscriberAdded):
            address = address_key("acme", event.payload.list_id, event.payload.email_sha256)
            if domain.add_membership(addresses, address, member and member["address"], event, offset) is not None:
                continue
        counted, change = domain.member_counting(None if member is None else member["counted"], event, False)
        if counted is None:
            if member is not None:
                domain.leave_address(addresses, member["address"], offset, key, erased=True)
            members.pop(key, None)
        else:
            members[key] = {"counted": counted, "address": address}
        if change and offset > through:  # Counters.add_at: an offset counted through counts nothing again
            subscribers, through = subscribers + change, offset
    return Store(*((subscribers, through) if written >= 1 else (store.subscribers, store.through)),
                 addresses if written >= 2 else store.addresses, members if written >= 3 else store.members)


def stored_by_subscriptions(events: list[Folded]) -> int:
    """The memberships subscriptions stores after these events: an add the rule refuses is dead-lettered."""
    memberships: dict[str, dict[str, Any]] = {}
    for event in events:
        p = event.payload
        if isinstance(event, SubscriberErased):
            if p.subscriber_id in memberships:
                memberships[p.subscriber_id] = {**memberships[p.subscriber_id], "status": "erased"}
        elif holder(memberships.values(), list_id=p.list_id, email_sha256=p.email_sha256,
                    subscriber_id=p.subscriber_id) is None:
            memberships[p.subscriber_id] = {"subscriber_id": p.subscriber_id, "list_id": p.list_id,
                                            "email_sha256": p.email_sha256, "status": "active"}
    return sum(m["status"] != "erased" for m in memberships.values())


def at_offsets(events: list[Folded]) -> list[tuple[int, Folded]]:
    return list(enumerate(events))


def test_an_address_added_under_21_crm_ids_is_one_subscriber_of_the_list() -> None:
    store = fold(Store(), at_offsets([added(f"crm-{n}") for n in range(21)]))
    assert store.subscribers == 1 and list(store.members) == ["crm-0"]
    assert store.addresses[address_key("acme", "news", sha256(ANN))]["subscriber_id"] == "crm-0"


def test_the_same_address_on_two_lists_is_two_memberships() -> None:
    events: list[Folded] = [added("crm-1"), added("crm-2", "offers"), added("crm-3", "offers")]
    assert fold(Store(), at_offsets(events)).subscribers == 2 == stored_by_subscriptions(events)


def test_the_refused_ids_erasure_moves_nothing_the_holders_frees_the_address() -> None:
    store = fold(Store(), at_offsets([added("crm-1"), added("crm-2"), erased("crm-2")]))
    assert store.subscribers == 1 and list(store.members) == ["crm-1"]
    store = fold(store, [(3, erased("crm-1")), (4, added("crm-2"))])
    assert store.subscribers == 1 and list(store.members) == ["crm-2"]  # the address free again: crm-2's now


def test_an_id_added_again_with_another_address_frees_the_one_it_held() -> None:
    events: list[Folded] = [added("crm-1"), added("crm-1", email=BOB), added("crm-2")]
    store = fold(Store(), at_offsets(events))
    assert store.subscribers == 2 == stored_by_subscriptions(events)


def test_an_erased_holder_leaves_no_id_with_the_address() -> None:
    store = fold(Store(), at_offsets([added("crm-1"), added("crm-2"), erased("crm-1")]))
    doc = store.addresses[address_key("acme", "news", sha256(ANN))]
    assert doc["subscriber_id"] is None and "crm-1" not in str(doc["changes"])
    assert doc["changes"] == [{"at": 0, "by": domain.ERASED}, {"at": 2, "by": None}]


def test_a_replay_decides_as_the_fold_did_on_the_holder_at_each_offset() -> None:
    """The review's case: an add refused (crm-1 held the address), then crm-1 erased, in one batch; the batch
    folded again after a crash that wrote all of it: the refused add is refused again, not stored uncounted."""
    batch = [(5, added("crm-2")), (6, erased("crm-1"))]
    before = fold(Store(), [(4, added("crm-1"))])
    once = fold(before, batch)
    assert (once.subscribers, once.members) == (0, {})
    assert fold(once, batch) == once


ID = st.sampled_from(["crm-1", "crm-2", "crm-3"])
EVENT = st.one_of(st.builds(added, ID, st.sampled_from(["news", "offers"]), st.sampled_from([ANN, BOB])),
                  st.builds(erased, ID))


@settings(max_examples=300)
@given(st.lists(EVENT, max_size=14), st.data())
def test_counted_as_subscriptions_stores_whatever_the_batches_and_a_crash_and_replay(
        events: list[Folded], data: st.DataObject) -> None:
    """Folded in any batches, one of them interrupted after writing some of its collections and folded again from
    what the store holds: the same documents and count as folded once, and that count is subscriptions'."""
    whole = fold(Store(), at_offsets(events))
    assert whole.subscribers == stored_by_subscriptions(events) == sum(m["counted"] for m in whole.members.values())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=3)))
    crashed = data.draw(st.integers(0, len(cuts)))
    written = data.draw(st.integers(0, 3))
    store, start = Store(), 0
    for n, end in enumerate([*cuts, len(events)]):
        batch = at_offsets(events)[start:end]
        if n == crashed:
            store = fold(store, batch, written)
        store, start = fold(store, batch), end
    assert (store.subscribers, store.members) == (whole.subscribers, whole.members)
    assert {k: d["subscriber_id"] for k, d in store.addresses.items()} == {
        k: d["subscriber_id"] for k, d in whole.addresses.items()}
