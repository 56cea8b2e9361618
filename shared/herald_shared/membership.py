"""One person, one membership of a list: the rule every consumer of herald.subscriptions folds memberships by.

The contract lets a producer (a CRM) choose `subscriber_id`, so one address can come to a list under several ids
(a CRM adding the same person twice, its ids beside the API's own). A membership is (account, list, address hash):
a SubscriberAdded of an address that already has a membership of that list not erased, under another id, is no
membership. Every consumer folds the same per-account ordered partition, so applying this one pure rule gives the
same decision in each: subscriptions dead-letters such an add, delivery's audience and billing's count leave it out,
and every later event naming that other id is about no member (it has none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def holder(memberships: Iterable[Mapping[str, Any] | None], *, list_id: str, email_sha256: str,
           subscriber_id: str) -> str | None:
    """The subscriber id that already holds this address on this list, when it is another than `subscriber_id`;
    None when a SubscriberAdded of `subscriber_id` is a membership (the address is on the list under no other id,
    or under this one: a re-add).

    `memberships`: the address's memberships as the consumer holds them, each a document with `subscriber_id`,
    `list_id`, `status` and, unless erased, `email_sha256` (None entries are skipped). Erased memberships hold
    nothing; nor does one whose id now names another address (a producer re-added the id with another email), as
    its hash tells."""
    found: str | None = None
    for doc in memberships:
        if doc is None or doc.get("status") == "erased" or doc.get("list_id") != list_id:
            continue
        if doc.get("email_sha256") != email_sha256:
            continue
        if doc.get("subscriber_id") == subscriber_id:
            return None
        if found is None or str(doc["subscriber_id"]) < found:
            found = str(doc["subscriber_id"])
    return found


def duplicate_reason(*, subscriber_id: str, list_id: str, account_id: str, existing: str) -> str:
    """Why a SubscriberAdded is no membership, as consumers dead-letter or log it."""
    return (f"SubscriberAdded of subscriber {subscriber_id!r} to list {list_id!r} of account {account_id!r}: the "
            f"address is already a member of that list as {existing!r} (one membership per address and list)")
