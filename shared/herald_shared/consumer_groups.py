"""Who is in a consumer group now, as the group's coordinator says: a job that must not run beside a service's
consumers (a read model's rebuild drops what they fold into) checks that its groups have no live member."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import DescribeGroupsRequest_v0, DescribeGroupsRequest_v1, DescribeGroupsRequest_v2
from aiokafka.protocol.api import Request

from .settings import HeraldSettings

# How long the coordinator may answer "not available" or "loading" (a broker just started, the offsets topic being
# created or moved) before the question fails.
COORDINATOR_WAIT_SECONDS = 30.0


_UP_TO_V2 = DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2


class _DescribeGroups(Request[_UP_TO_V2]):  # type: ignore[misc]
    """DescribeGroups, asked in version 2 at most: aiokafka 0.14 reads a version 3 answer (what
    `AIOKafkaAdminClient.describe_consumer_groups` asks a broker of today) with version 2's schema, and fails on a
    group with members ("Buffer underrun decoding string"). Versions 0 to 2 answer the fields read here."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: Any) -> Any:
        return request_struct_class(self._groups)


@dataclass(frozen=True)
class GroupMember:
    """A consumer in a group: its client id (a Herald consumer's is its group's name) and the address the broker
    sees it connect from (a pod's IP)."""

    group: str
    client_id: str
    host: str
    member_id: str

    def __str__(self) -> str:
        return f"{self.group}: client {self.client_id} at {self.host} (member {self.member_id})"


def members_described(groups: Sequence[dict[str, Any]]) -> list[GroupMember]:
    """The members of the groups a DescribeGroups answer describes (`Response.to_object()["groups"]`). A group's
    error is raised (KafkaError: `retriable` when it is the coordinator's passing state). A group no consumer has
    joined, or all left (state Empty or Dead), has none."""
    found = []
    for group in groups:
        if group["error_code"]:
            raise for_code(group["error_code"])(f"describing consumer group {group['group']!r}")
        found += [GroupMember(group["group"], member["client_id"], member["client_host"].lstrip("/"),
                              member["member_id"]) for member in group["members"]]
    return found


async def live_members(settings: HeraldSettings, groups: Sequence[str]) -> list[GroupMember]:
    """Every member the coordinators of these groups count now. A process that stopped cleanly has left its group;
    one that was killed stays a member until its session times out (HERALD_KAFKA_SESSION_TIMEOUT_SECONDS)."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options(), client_id="herald-admin")
    await admin.start()
    try:
        deadline = time.monotonic() + COORDINATOR_WAIT_SECONDS
        while True:
            try:
                return members_described(await _describe(admin, groups))
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)  # the coordinator is moving or loading: asked again, up to the deadline
    finally:
        await admin.close()


async def _describe(admin: AIOKafkaAdminClient, groups: Sequence[str]) -> list[dict[str, Any]]:
    """Each group as its coordinator describes it (what `describe_consumer_groups` does, in `_DescribeGroups`'s
    version; `_send_request` is the admin client's private way to a broker: test_rebuild_refuses_live_group.py
    fails if an upgrade changes it)."""
    by_coordinator: dict[int, list[str]] = {}
    for group in groups:
        by_coordinator.setdefault(await admin.find_coordinator(group), []).append(group)
    answers = await asyncio.gather(*(admin._send_request(_DescribeGroups(asked), node)
                                     for node, asked in by_coordinator.items()))
    return [group for answer in answers for group in answer.to_object()["groups"]]
