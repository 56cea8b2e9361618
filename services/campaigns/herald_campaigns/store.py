"""Campaigns' read model in MongoDB, folded from events, and the queries the API needs; every read and write by
`_id` or an `_id` range, every query scoped by account.

`campaigns` (`account/campaign`): each campaign folded in Python (`domain.evolve`) over the documents a batch
touches, loaded by `_id`; `lists` (`account/list`): the account's lists and their custom fields, from
herald.subscriptions, so a draft's target and segment are checked without asking that service.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.contract import Event
from herald_shared.contract.campaigns import CampaignContent, CampaignCreated, CampaignDeleted, CampaignEdited
from herald_shared.contract.subscriptions import ListCreated, ListDeleted
from herald_shared.mongo import Document, Projection, UpdateOne, WriteOp
from herald_shared.readmodel import Counters, compose, insert_new, load, prefix_range, write_changes

from . import domain
from .domain import CampaignState, ListInfo

CAMPAIGNS, LISTS, REPORTS, ENGAGED = "campaigns", "lists", "reports", "engaged"
CAMPAIGN_EVENTS = (CampaignCreated, CampaignEdited, CampaignDeleted)


def campaign_key(account_id: str, campaign_id: str) -> str:
    return compose(account_id, campaign_id)


class CampaignsProjection(Projection):
    collections = (CAMPAIGNS, LISTS)

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self._campaign_events: list[Event] = []

    async def handle(self, event: Event) -> None:
        if isinstance(event, CAMPAIGN_EVENTS):
            self._campaign_events.append(event)
        await super().handle(event)

    async def flush(self) -> None:
        events, self._campaign_events = self._campaign_events, []
        try:
            await self._fold(events)
        except Exception:
            self._campaign_events = events + self._campaign_events
            raise
        await super().flush()

    async def _fold(self, events: list[Event]) -> None:
        if not events:
            return
        keys = {campaign_key(e.account_id, e.payload.campaign_id) for e in events}  # type: ignore[attr-defined]
        before = await load(self.db[CAMPAIGNS], keys)
        after: dict[str, Document | None] = dict(before)
        for event in events:
            key = campaign_key(event.account_id, event.payload.campaign_id)  # type: ignore[attr-defined]
            folded = domain.evolve(after.get(key), event, event.occurred_at)
            if folded is not None:
                after[key] = {**folded, "_id": key}
        await write_changes(self.db[CAMPAIGNS], before, {k: v for k, v in after.items() if v is not before.get(k)})

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        match event:
            case ListCreated(payload=p):
                return [(LISTS, UpdateOne({"_id": compose(event.account_id, p.list_id)}, {"$setOnInsert": {
                    "account_id": event.account_id, "list_id": p.list_id,
                    "custom_fields": {f.name: f.kind for f in p.custom_fields}}}, upsert=True))]
            case ListDeleted(payload=p):
                return [(LISTS, UpdateOne({"_id": compose(event.account_id, p.list_id)},
                                          {"$set": {"deleted": True}}))]
        return []


def report_key(account_id: str, campaign_id: str, topic: str) -> str:
    """A campaign's counters, one document per input topic: `Counters` needs each key's events from one
    partition (an account's delivery events are on one, its subscriptions events on another)."""
    return compose(account_id, campaign_id, topic)


class ReportsProjection(Projection):
    """Per campaign, counters folded from herald.delivery and herald.subscriptions (`reports`, exact under
    replay: see herald_shared.readmodel.Counters), and a marker per message opened or clicked (`engaged`,
    inserted in bulk once counted) so unique opens and clicks count each message once."""

    collections = (REPORTS, ENGAGED)

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self._events: list[tuple[str, Event]] = []
        self._counts = Counters(db[REPORTS])

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        return []

    async def handle(self, event: Event) -> None:
        campaign = domain.report_campaign(event)
        if campaign is not None:
            self._events.append((report_key(event.account_id, campaign, event.topic), event))

    async def flush(self) -> None:
        events, self._events = self._events, []
        try:
            await self._fold(events)
        except Exception:
            self._events = events + self._events
            self._counts.discard()
            raise

    async def _fold(self, events: list[tuple[str, Event]]) -> None:
        if not events:
            return
        markers = {compose(key, first[1]) for key, event in events if (first := domain.engagement(event))}
        seen = set(await load(self.db[ENGAGED], markers))
        await self._counts.prepare({key for key, _ in events})
        new: list[str] = []
        for key, event in events:
            counts = domain.report_counts(event)
            first = domain.engagement(event)
            if first is not None and (marker := compose(key, first[1])) not in seen:
                seen.add(marker)
                new.append(marker)
                counts[first[0]] = 1
            self._counts.add(key, event, counts)
        # Counters first: a replay after a crash skips what they counted, then inserts the markers again.
        await self._counts.write()
        await insert_new(self.db[ENGAGED], [{"_id": marker} for marker in new])


class CampaignsStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db

    async def campaign(self, account_id: str, campaign_id: str) -> Document | None:
        doc = await self.db[CAMPAIGNS].find_one({"_id": campaign_key(account_id, campaign_id)})
        return doc if doc is not None and doc["status"] != "deleted" else None

    async def campaign_state(self, account_id: str, campaign_id: str) -> CampaignState | None:
        doc = await self.db[CAMPAIGNS].find_one({"_id": campaign_key(account_id, campaign_id)})
        return _state(doc) if doc is not None else None

    async def campaigns(self, account_id: str, after: str | None, limit: int) -> tuple[list[Document], str | None]:
        """A page of the account's campaigns in id order (deleted ones left out, so a page may hold fewer),
        from after the campaign id `after`, and the id to continue after (None at the end)."""
        bounds: dict[str, Any] = prefix_range(account_id)
        if after is not None:
            bounds = {"$gt": campaign_key(account_id, after), "$lt": bounds["$lt"]}
        found = [doc async for doc in self.db[CAMPAIGNS].find({"_id": bounds}).sort("_id", 1).limit(limit)]
        last = str(found[-1]["campaign_id"]) if len(found) == limit else None
        return [doc for doc in found if doc["status"] != "deleted"], last

    async def report_counts(self, account_id: str, campaign_id: str) -> dict[str, int]:
        found = await load(self.db[REPORTS], [report_key(account_id, campaign_id, t)
                                              for t in ("herald.delivery", "herald.subscriptions")])
        counts: dict[str, int] = {}
        for doc in found.values():
            for name, value in doc.get("counts", {}).items():
                counts[name] = counts.get(name, 0) + int(value)
        return counts

    async def list_info(self, account_id: str, list_id: str) -> ListInfo | None:
        doc = await self.db[LISTS].find_one({"_id": compose(account_id, list_id)})
        if doc is None:
            return None
        return ListInfo(list_id=doc["list_id"], custom_fields=dict(doc.get("custom_fields", {})),
                        deleted=bool(doc.get("deleted")))


def _state(doc: Document) -> CampaignState:
    return CampaignState(account_id=doc["account_id"], campaign_id=doc["campaign_id"], status=doc["status"],
                         name=doc["name"], list_id=doc["list_id"], segment=dict(doc.get("segment", {})),
                         content=CampaignContent.model_validate(doc["content"]))
