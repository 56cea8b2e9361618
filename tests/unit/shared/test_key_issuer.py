"""Only billing issues and revokes API keys: a key event in another producer's name is refused (dead-lettered
with the reason by the consumer), never folded into the keys every service authenticates with."""

from __future__ import annotations

from typing import Any

import pytest

from herald_shared.apikeys import KEY_ISSUER, ApiKeyProjection, new_api_key
from herald_shared.contract import Event
from herald_shared.contract.billing import ApiKeyIssued, ApiKeyRevoked
from herald_shared.kafka import Reject


class NoDatabase(dict[str, Any]):
    """Nothing is read or written by handle/apply: the projection only stages operations."""

    def __missing__(self, name: str) -> None:
        return None


def issued(producer: str, account_id: str = "acc-b") -> ApiKeyIssued:
    key_id, _, key_hash = new_api_key()
    return ApiKeyIssued(account_id=account_id, producer=producer, payload={  # type: ignore[arg-type]
        "key_id": key_id, "key_hash": key_hash, "issued_by": "crm-sync"})


def revoked(producer: str) -> ApiKeyRevoked:
    return ApiKeyRevoked(account_id="acc-b", producer=producer, payload={  # type: ignore[arg-type]
        "key_id": "0123abcd", "revoked_by": "crm-sync"})


def projection() -> ApiKeyProjection:
    return ApiKeyProjection(NoDatabase())  # type: ignore[arg-type]


def test_billing_is_the_producer_billing_writes() -> None:
    from herald_billing.domain import PRODUCER

    assert KEY_ISSUER == PRODUCER


@pytest.mark.parametrize("event", [issued("crm"), revoked("crm"), issued("subscriptions"), issued("billing ")],
                         ids=["issued-crm", "revoked-crm", "issued-subscriptions", "issued-billing-space"])
async def test_a_key_event_of_another_producer_is_refused_with_the_reason(event: Event) -> None:
    """PRODUCT.md: one account can never read or change another account's data (review: a CRM's ApiKeyIssued
    opened another account's members and GDPR export)."""
    keys = projection()
    with pytest.raises(Reject) as refused:
        await keys.handle(event)
    assert refused.value.reason.startswith(f"{event.type} from producer {event.producer!r}: only 'billing' issues")
    assert "acc-b" in refused.value.reason
    assert keys.apply(event) == []  # nor folded where nothing refuses (a rebuild)


@pytest.mark.parametrize("event", [issued("billing"), revoked("billing")], ids=["issued", "revoked"])
async def test_billings_key_events_are_folded(event: Event) -> None:
    keys = projection()
    await keys.handle(event)
    assert [collection for collection, _ in keys.apply(event)] == ["api_keys"]
