"""The broker of this folder's tests: it authenticates and authorizes (`helpers.secured_kafka_started`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from herald_shared.kafka import ensure_topics
from tests.integration.kafka_auth.helpers import SecuredKafka, admin_of, create_acls, prod_acls, secured_kafka_started


@pytest.fixture(scope="package")
async def authorized_kafka() -> AsyncIterator[SecuredKafka]:
    """Started once for the folder, with Herald's topics and the prod overlay's users and ACLs (`prod_acls`)."""
    with secured_kafka_started() as kafka:
        admin = await admin_of(kafka)
        try:
            await create_acls(admin, prod_acls())
        finally:
            await admin.close()
        await ensure_topics(kafka.settings("admin"))
        yield kafka
