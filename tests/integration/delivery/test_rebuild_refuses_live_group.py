"""The audience's rebuild (`python -m herald_delivery.rebuild`, README "Upgrading") refuses to run while a delivery
process consumes in the service's consumer groups: it would drop and refill the audience they fold into and expand
campaigns from. Once they have stopped, it runs; one left half done is refused by this version until run to its
end. An edge process (no consumer) does not hold it back."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from herald_delivery import store
from herald_delivery.main import Delivery
from herald_delivery.rebuild import REFUSED, consumer_groups, fold_audience, rebuild_audience
from herald_delivery.store import AUDIENCE
from herald_shared.consumer_groups import live_members
from herald_shared.mongo import Document
from herald_shared.rebuilding import FORMATS, ReadModelOutdated
from herald_shared.settings import HeraldSettings
from tests.conftest import dies_with_the_tests, eventually, subprocess_env

from .conftest import World, delivery_settings


async def run_rebuild(settings: HeraldSettings) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herald_delivery.rebuild", env=subprocess_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=dies_with_the_tests)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_the_rebuild_refuses_while_delivery_consumes_and_runs_once_it_stopped(
        settings: HeraldSettings, world: World, relay: Any, mongo: AsyncMongoClient[Document]) -> None:
    service = Delivery(delivery_settings(settings, relay.port))
    await service.start()
    stopped = False
    try:
        groups = consumer_groups(settings)
        assert sorted(groups) == sorted(c.name for c in (service.audience, service.confirmations, service.control))
        await world.open_account("acme")
        await world.add_list("acme", "news", [("ann", "ann@example.org")])
        await service.audience_caught_up()
        await eventually(lambda: live_members(settings, groups),
                         lambda members: {m.group for m in members} == set(groups), what="every consumer in its group")

        code, stderr = await run_rebuild(settings)
        assert code == REFUSED, stderr
        assert "herald-delivery rebuild refused (nothing was dropped)" in stderr
        for group in groups:  # each group, its member's client id (a Herald consumer's is its group's) and host
            assert f"  {group}: client {group} at 127.0.0.1 (member {group}-" in stderr, stderr
        db = mongo[settings.database_name("delivery")]
        assert await db[store.MEMBERS].find_one({"_id": "acme:ann"}) is not None
        assert await db[FORMATS].find_one({"_id": "audience"}) == {"_id": "audience",
                                                                   "format": store.AUDIENCE_FORMAT}

        await service.stop()  # a clean stop leaves the groups at once
        stopped = True
        # An edge process folds nothing and is in no group: it may go on recording opens and bounces meanwhile.
        edge = Delivery(delivery_settings(settings, relay.port, HERALD_RUN_CONSUMERS=False))
        await edge.start()
        try:
            code, stderr = await run_rebuild(settings)
        finally:
            await edge.stop()
        assert code == 0, stderr
        assert "refused" not in stderr
        assert (await db[store.MEMBERS].find_one({"_id": "acme:ann"}) or {}).get("status") == "active"  # again
        await AUDIENCE.check(db)  # and marked
    finally:
        if not stopped:
            await service.stop()


async def test_a_rebuild_left_half_done_is_refused_by_this_version_until_run_to_its_end(
        settings: HeraldSettings, world: World, mongo: AsyncMongoClient[Document]) -> None:
    """The mark goes first and comes back last: what an interrupted rebuild (or one that processes joined) leaves
    is not sent from, even where an earlier run had marked the format."""
    await world.add_list("acme", "news", [("ann", "ann@example.org")])
    db = mongo[settings.database_name("delivery")]
    await rebuild_audience(settings, db)
    await AUDIENCE.check(db)

    await fold_audience(settings, db)  # a run that never reached its mark
    with pytest.raises(ReadModelOutdated, match=r"python -m herald_delivery\.rebuild"):
        await AUDIENCE.check(db)
    await rebuild_audience(settings, db)
    await AUDIENCE.check(db)
    assert (await db[store.MEMBERS].find_one({"_id": "acme:ann"}) or {}).get("status") == "active"
