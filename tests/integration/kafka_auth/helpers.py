"""A Kafka broker that authenticates (SASL/SCRAM-SHA-512) and authorizes (ACLs; nothing is allowed that no ACL
allows) as the prod overlay's does, with its users and their ACLs: the jars and the single-node KRaft set-up of
scripts/stack, on free ports, its data on tmpfs."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import CreateAclsRequest

from herald_shared.settings import HeraldSettings
from tests.conftest import ROOT, dies_with_the_tests, free_port

SERVICES = ("billing", "campaigns", "compliance", "delivery", "subscriptions")
# The users the broker knows, created when its storage is formatted (SCRAM credentials live in the cluster's
# metadata): the prod overlay's, one per service, and a third party's; `admin` is the broker's own and the only
# super user of the clients' listener.
USERS = ("admin", "crm", *SERVICES)
START_SECONDS = 60.0
KAFKA_USERS = ROOT / "deploy/k8s/overlays/prod/kafka-users.yaml"

# Kafka's codes (org.apache.kafka.common.acl, ...resource) as CreateAcls carries them.
RESOURCE_TYPES = {"topic": 2, "group": 3}
PATTERN_TYPES = {"literal": 3, "prefix": 4}
OPERATIONS = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8}
ALLOW = 3


@dataclass(frozen=True)
class Acl:
    user: str
    operation: str
    resource_type: str
    resource: str
    pattern: str = "literal"


def prod_acls() -> list[Acl]:
    """The ACLs of the prod overlay's KafkaUsers (overlays/prod/kafka-users.yaml, as Strimzi's user operator
    creates them), and those deploy/k8s/README.md gives a third party (a CRM): Write on herald.subscriptions."""
    found = [Acl("crm", operation, "topic", "herald.subscriptions") for operation in ("Write", "Describe")]
    for user in yaml.safe_load_all(KAFKA_USERS.read_text()):
        assert user["kind"] == "KafkaUser" and user["spec"]["authentication"]["type"] == "scram-sha-512", user
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            found += [Acl(user["metadata"]["name"], operation, resource["type"], resource["name"],
                          resource.get("patternType", "literal")) for operation in acl["operations"]]
    return found


@dataclass
class SecuredKafka:
    """The broker's address and its users' passwords."""

    bootstrap: str
    passwords: dict[str, str] = field(repr=False)

    def settings(self, user: str, password: str | None = None, **fields: Any) -> HeraldSettings:
        """Herald's settings of a client that authenticates as `user` (with its password unless one is given)."""
        return HeraldSettings(kafka_bootstrap_servers=self.bootstrap, kafka_security_protocol="SASL_PLAINTEXT",
                              kafka_username=user, kafka_password=password or self.passwords[user], **fields)


def kafka_libs() -> Path:
    """Where scripts/stack keeps Kafka's jars (its `fetch_kafka`): the cache folder of the pinned version."""
    pom = (ROOT / "deploy/local/kafka-pom.xml").read_text()
    found = re.search(r"<kafka.version>(.*?)</kafka.version>", pom)
    assert found is not None, "deploy/local/kafka-pom.xml names no <kafka.version>"
    cache = os.environ.get("HERALD_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "herald")
    libs = Path(cache) / f"kafka-{found.group(1)}" / "libs"
    if not (libs / ".complete").is_file():
        pytest.fail(f"Kafka's jars are not in {libs}: `scripts/stack start` (or scripts/test) fetches them")
    return libs


def server_properties(data: Path, port: int, controller: int, admin_password: str) -> str:
    # The controller listener stays PLAINTEXT on loopback (KRaft controllers cannot take SCRAM: its credentials
    # live in the metadata they serve), where the broker is User:ANONYMOUS, a super user there. Clients reach the
    # SASL listener only, where nobody is anonymous.
    return f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\\
org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="{admin_password}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""


def _java(libs: Path, logs: Path, *args: str) -> list[str]:
    # C1 alone and the serial collector: a test broker's start in half the time, not a server's peak throughput.
    return ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={ROOT / 'deploy/local/log4j2.properties'}", f"-Dkafka.logs.dir={logs}",
            "-cp", f"{libs}/*", *args]


def _wait_for_port(port: int, broker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert broker.poll() is None, f"the broker exited at start:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"the broker did not listen within {START_SECONDS:g} s (log: {log})"
        time.sleep(0.1)


@contextmanager
def secured_kafka_started() -> Iterator[SecuredKafka]:
    """The broker, formatted with the users of `USERS` (random passwords) and listening; stopped and deleted at
    the end. Its data is on tmpfs when there is one, as scripts/stack's with HERALD_STACK_TMPFS=1."""
    libs = kafka_libs()
    folder = Path(tempfile.mkdtemp(prefix="herald-kafka-auth.", dir="/dev/shm" if os.access("/dev/shm", os.W_OK)
                                   else None))
    try:
        port, controller = free_port(), free_port()
        passwords = {user: secrets.token_urlsafe(18) for user in USERS}
        props, logs = folder / "server.properties", folder / "logs"
        props.write_text(server_properties(folder / "data", port, controller, passwords["admin"]))
        scram = [arg for user in USERS
                 for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={passwords[user]}]")]
        formatted = subprocess.run(
            _java(libs, logs, "kafka.tools.StorageTool", "format", "-t", "herald-kafka-auth-test0", "-c", str(props),
                  *scram), capture_output=True, text=True, timeout=120, check=False)
        assert formatted.returncode == 0, f"formatting the broker's storage failed:\n{formatted.stderr}"
        log = folder / "stdout.log"
        with log.open("wb") as out:
            broker = subprocess.Popen(_java(libs, logs, "-Xms128m", "-Xmx512m", "kafka.Kafka", str(props)),
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=dies_with_the_tests)
        try:
            _wait_for_port(port, broker, log)
            yield SecuredKafka(f"127.0.0.1:{port}", passwords)
        finally:
            broker.send_signal(signal.SIGTERM)
            try:
                broker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def admin_of(kafka: SecuredKafka) -> AIOKafkaAdminClient:
    """A started admin client of the super user, once the broker answers it (it listens before it serves)."""
    options = kafka.settings("admin").kafka_client_options()
    deadline = time.monotonic() + START_SECONDS
    while True:
        admin = AIOKafkaAdminClient(**options, client_id="kafka-auth-tests")
        try:
            await admin.start()
            await admin.list_topics()
            return admin
        except KafkaError:
            await admin.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def create_acls(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    """Allow each of `acls` from any host. aiokafka 0.14 has the request but no method for it: `_send_request`
    is the admin client's way to a broker (herald_shared.consumer_groups relies on it too)."""
    for acl in acls:
        answer = await admin._send_request(CreateAclsRequest(
            RESOURCE_TYPES[acl.resource_type], acl.resource, PATTERN_TYPES[acl.pattern], f"User:{acl.user}", "*",
            OPERATIONS[acl.operation], ALLOW))
        for code, message in answer.creation_responses:
            if code:
                raise for_code(code)(f"creating {acl}: {message}")
