"""One function per request: load state, let the domain decide, publish, and wait until the projection holds
the result so the answer reflects it."""

from __future__ import annotations

from herald_shared.commands import Recorder
from herald_shared.mongo import Document

from . import domain
from .domain import Draft
from .store import CampaignsStore


class CampaignsService:
    def __init__(self, store: CampaignsStore, recorder: Recorder) -> None:
        self.store = store
        self.recorder = recorder

    async def create(self, account_id: str, campaign_id: str | None, draft: Draft) -> Document:
        campaign_id = campaign_id or domain.new_campaign_id()
        async with self.recorder.serialised(f"campaign:{account_id}:{campaign_id}"):
            existing = await self.store.campaign_state(account_id, campaign_id)
            lst = await self.store.list_info(account_id, draft.list_id)
            await self.recorder.commit(domain.create(account_id, campaign_id, draft, lst, existing))
        return await self._campaign(account_id, campaign_id)

    async def edit(self, account_id: str, campaign_id: str, draft: Draft) -> Document:
        async with self.recorder.serialised(f"campaign:{account_id}:{campaign_id}"):
            current = await self.store.campaign_state(account_id, campaign_id)
            lst = await self.store.list_info(account_id, draft.list_id)
            await self.recorder.commit(domain.edit(current, campaign_id, draft, lst))
        return await self._campaign(account_id, campaign_id)

    async def duplicate(self, account_id: str, campaign_id: str) -> Document:
        new_id = domain.new_campaign_id()
        current = await self.store.campaign_state(account_id, campaign_id)
        await self.recorder.commit(domain.duplicate(current, campaign_id, new_id))
        return await self._campaign(account_id, new_id)

    async def delete(self, account_id: str, campaign_id: str) -> None:
        async with self.recorder.serialised(f"campaign:{account_id}:{campaign_id}"):
            current = await self.store.campaign_state(account_id, campaign_id)
            await self.recorder.commit(domain.delete(current, campaign_id))

    async def _campaign(self, account_id: str, campaign_id: str) -> Document:
        doc = await self.store.campaign(account_id, campaign_id)
        if doc is None:
            raise domain.CampaignNotFound(f"no campaign {campaign_id!r}")
        return doc
