"""Which projections an EventConsumer may write in the background (`sealable`), and what `seal` takes."""

from __future__ import annotations

from typing import Any

import pytest

from herald_campaigns.store import CampaignsProjection, ReportsProjection
from herald_delivery.store import AudienceProjection
from herald_shared.apikeys import ApiKeyProjection
from herald_shared.contract import Event
from herald_shared.mongo import Projection, ProjectionGroup, UpdateOne, WriteOp
from herald_subscriptions.store import SubscriptionsProjection
from tests.samples import sample


class Keyed(Projection):
    sealable = True

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        return [("things", UpdateOne({"_id": str(event.event_id)}, {"$set": {"type": event.type}}, upsert=True))]


class NoDatabase:
    """Collections by name, never used: these tests write nothing."""

    def __getitem__(self, name: str) -> None:
        return None


def test_projections_that_keep_state_beyond_what_they_stage_are_not_sealable() -> None:
    db: Any = NoDatabase()
    assert ApiKeyProjection(db).sealable and SubscriptionsProjection(db).sealable
    # These read the store while handling (reports look markers up ahead) or fold in their own way: they
    # flush in turn.
    for projection in (CampaignsProjection(db), ReportsProjection(db), AudienceProjection(db)):
        assert not projection.sealable
        with pytest.raises(TypeError):
            projection.seal()
    assert ProjectionGroup(SubscriptionsProjection(db), ApiKeyProjection(db)).sealable
    assert not ProjectionGroup(CampaignsProjection(db), ApiKeyProjection(db)).sealable


async def test_seal_takes_what_was_staged_and_the_next_batch_stages_afresh() -> None:
    projection = Keyed(None)  # type: ignore[arg-type]
    await projection.handle(sample("MessageSent"))
    projection.seal()
    assert projection._staged == []
    await projection.handle(sample("MessageOpened"))
    assert len(projection._staged) == 1
