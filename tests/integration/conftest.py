"""Fixtures of the integration tests of more than one service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.helpers import PrivateKafka, private_kafka_in


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """A Kafka broker of the module's own (`helpers.PrivateKafka`), deleted after its last test."""
    with private_kafka_in(tmp_path_factory.mktemp("stack")) as kafka:
        yield kafka
