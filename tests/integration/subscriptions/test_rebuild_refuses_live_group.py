"""The upgrade's rebuild (`python -m herald_subscriptions.rebuild`, README "Upgrading") refuses to run while a
subscriptions process consumes in the service's consumer groups: it would drop and refill what they fold into.
Once they have stopped, it runs."""

from __future__ import annotations

import asyncio
import sys

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, NotCoordinatorForGroupError
from pymongo import AsyncMongoClient

from herald_shared.consumer_groups import GroupMember, live_members, members_described
from herald_shared.mongo import Document
from herald_shared.settings import HeraldSettings
from herald_subscriptions import store
from herald_subscriptions.main import Subscriptions
from herald_subscriptions.rebuild import REFUSED, consumer_groups, fold_read_model, rebuild_read_model
from herald_subscriptions.store import ReadModelOutdated, check_format
from tests.conftest import dies_with_the_tests, eventually, subprocess_env
from tests.integration.subscriptions.conftest import Platform


async def run_rebuild(settings: HeraldSettings) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herald_subscriptions.rebuild", env=subprocess_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=dies_with_the_tests)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def test_a_group_with_no_member_counts_none_and_a_group_the_broker_cannot_describe_is_an_error() -> None:
    """No stack needed: DescribeGroups' answer as aiokafka decodes it (`to_object`)."""
    member = {"member_id": "g-1", "client_id": "g", "client_host": "/10.1.2.3", "member_metadata": b"",
              "member_assignment": b""}
    described = [{"error_code": 0, "group": "g", "state": "Stable", "protocol_type": "consumer", "protocol": "range",
                  "members": [member]},
                 {"error_code": 0, "group": "h", "state": "Empty", "protocol_type": "consumer", "protocol": "",
                  "members": []}]
    assert members_described(described) == [GroupMember("g", "g", "10.1.2.3", "g-1")]
    with pytest.raises(NotCoordinatorForGroupError) as moving:  # asked again (`live_members`), up to a deadline
        members_described([{**described[1], "error_code": 16}])
    assert moving.value.retriable
    with pytest.raises(GroupAuthorizationFailedError):
        members_described([{**described[1], "error_code": 30}])


async def test_the_rebuild_checks_the_groups_the_service_consumes_in(platform: Platform) -> None:
    assert sorted(consumer_groups(platform.settings)) == sorted(c.name for c in platform.service.consumers)


async def test_the_rebuild_refuses_while_the_service_consumes_and_runs_once_it_stopped(
        platform: Platform, mongo: AsyncMongoClient[Document]) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    assert (await acme.subscribe("anna@example.com")).status_code == 201
    db, groups = mongo[platform.settings.database_name("subscriptions")], consumer_groups(platform.settings)
    await eventually(lambda: live_members(platform.settings, groups),
                     lambda members: {m.group for m in members} == set(groups), what="every consumer in its group")

    code, stderr = await run_rebuild(platform.settings)
    assert code == REFUSED, stderr
    assert "rebuild refused (nothing was dropped)" in stderr
    for group in groups:  # each group, its member's client id (a Herald consumer's is its group's) and host
        assert f"  {group}: client {group} at 127.0.0.1 (member {group}-" in stderr, stderr
    assert await db[store.LISTS].find_one({"_id": "acme/news"}) is not None
    assert await db[store.FORMATS].find_one({"_id": "subscriptions"}) == {"_id": "subscriptions",
                                                                          "format": store.FORMAT}

    await platform.service.stop()  # a clean stop leaves the groups at once
    # A process serving HTTP only is in no group: the rebuild cannot see it (README, "Upgrading": stop it too).
    api = Subscriptions(platform.settings.model_copy(update={"run_consumers": False}))
    await api.start()
    try:
        assert await live_members(platform.settings, groups) == []
    finally:
        await api.stop()

    code, stderr = await run_rebuild(platform.settings)
    assert code == 0, stderr
    assert "refused" not in stderr
    assert await db[store.LISTS].find_one({"_id": "acme/news"}) is not None  # folded again
    await check_format(db)  # and marked


async def test_a_rebuild_left_half_done_is_refused_by_this_version_until_run_to_its_end(platform: Platform) -> None:
    """The mark goes first and comes back last: what an interrupted rebuild (or one that processes joined) leaves
    is not served, even where an earlier run had marked the format."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    assert (await acme.subscribe("anna@example.com")).status_code == 201
    other = platform.service.mongo[platform.settings.database_name("subscriptions-rebuilt")]
    await rebuild_read_model(platform.settings, other)
    await check_format(other)

    await fold_read_model(platform.settings, other)  # a run that never reached its mark
    with pytest.raises(ReadModelOutdated):
        await check_format(other)
    await rebuild_read_model(platform.settings, other)
    await check_format(other)
