"""Kafka security settings: every client gets the brokers and the credentials from one place
(`HeraldSettings.kafka_client_options`, faust through `broker_credentials`), PLAINTEXT stays what it was, and a
half-configured client is refused at start, saying which variable is wrong and quoting no secret."""

from __future__ import annotations

import ssl

import certifi
import faust
import pytest
from pydantic import ValidationError

from herald_compliance.main import broker_credentials
from herald_shared.settings import HeraldSettings

SASL = {"HERALD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "HERALD_KAFKA_USERNAME": "billing",
        "HERALD_KAFKA_PASSWORD": "s3cret-of-billing"}


def test_plaintext_by_default_gives_the_brokers_alone() -> None:
    settings = HeraldSettings(kafka_bootstrap_servers="k1:9092,k2:9092")
    assert settings.kafka_client_options() == {"bootstrap_servers": "k1:9092,k2:9092"}
    assert settings.kafka_ssl_context() is None and broker_credentials(settings) is None


def test_sasl_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # a test stack's, when the suite runs on one
    for name, value in {**SASL, "HERALD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}.items():
        monkeypatch.setenv(name, value)
    settings = HeraldSettings()
    assert settings.kafka_client_options() == {
        "bootstrap_servers": "127.0.0.1:9092", "security_protocol": "SASL_PLAINTEXT", "ssl_context": None,
        "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "billing",
        "sasl_plain_password": "s3cret-of-billing"}
    assert "s3cret" not in repr(settings)


def test_scram_sha_512_is_the_default_mechanism() -> None:
    assert HeraldSettings(**SASL).kafka_client_options()["sasl_mechanism"] == "SCRAM-SHA-512"  # type: ignore[arg-type]


def test_sasl_ssl_verifies_the_brokers_with_the_ca_file() -> None:
    settings = HeraldSettings(**{**SASL, "HERALD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",  # type: ignore[arg-type]
                                 "HERALD_KAFKA_CA_FILE": certifi.where()})
    context = settings.kafka_client_options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0


def test_faust_authenticates_as_the_other_clients() -> None:
    credentials = broker_credentials(HeraldSettings(**SASL))  # type: ignore[arg-type]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.mechanism.value, credentials.protocol.value) == (
        "billing", "s3cret-of-billing", "SCRAM-SHA-512", "SASL_PLAINTEXT")
    tls = broker_credentials(HeraldSettings(HERALD_KAFKA_SECURITY_PROTOCOL="SSL"))  # type: ignore[call-arg]
    assert isinstance(tls, faust.SSLCredentials) and tls.protocol.value == "SSL"


@pytest.mark.parametrize(("fields", "said"), [
    ({"HERALD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "HERALD_KAFKA_PASSWORD": "s3cret-of-billing"},
     "HERALD_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs HERALD_KAFKA_USERNAME and HERALD_KAFKA_PASSWORD"),
    ({"HERALD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "HERALD_KAFKA_USERNAME": "billing"},
     "HERALD_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs HERALD_KAFKA_USERNAME and HERALD_KAFKA_PASSWORD"),
    ({"HERALD_KAFKA_USERNAME": "billing", "HERALD_KAFKA_PASSWORD": "s3cret-of-billing"},
     "HERALD_KAFKA_SECURITY_PROTOCOL=PLAINTEXT sends no credentials"),
    ({"HERALD_KAFKA_CA_FILE": "/etc/hosts"}, "HERALD_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS"),
    ({"HERALD_KAFKA_SECURITY_PROTOCOL": "SSL", "HERALD_KAFKA_CA_FILE": "/nowhere/ca.pem"},
     "HERALD_KAFKA_CA_FILE=/nowhere/ca.pem is no file"),
    ({"HERALD_KAFKA_SECURITY_PROTOCOL": "SASL"}, "HERALD_KAFKA_SECURITY_PROTOCOL"),
    ({**SASL, "HERALD_KAFKA_SASL_MECHANISM": "GSSAPI"}, "HERALD_KAFKA_SASL_MECHANISM"),
], ids=["sasl-without-username", "sasl-without-password", "credentials-without-sasl", "ca-without-tls",
        "ca-missing", "unknown-protocol", "unknown-mechanism"])
def test_a_half_configured_client_is_refused_at_start_saying_what_is_wrong(
        monkeypatch: pytest.MonkeyPatch, fields: dict[str, str], said: str) -> None:
    for name, value in fields.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        HeraldSettings()
    assert said in str(refused.value)
    assert "s3cret" not in str(refused.value)  # the password is never quoted into a start-up failure's log



def test_a_user_name_alone_changes_nothing_without_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upgrade Jobs name their service's Kafka user in every overlay; where the brokers take no credentials
    (no Secret, no password) the client connects as before."""
    monkeypatch.delenv("HERALD_KAFKA_PASSWORD", raising=False)
    settings = HeraldSettings(HERALD_KAFKA_USERNAME="subscriptions")  # type: ignore[call-arg]
    assert settings.kafka_client_options() == {"bootstrap_servers": settings.kafka_bootstrap_servers}
