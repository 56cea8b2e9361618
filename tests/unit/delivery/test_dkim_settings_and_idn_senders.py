"""DKIM settings that name no key stop the start instead of sending unsigned mail; the keys that sign are logged;
a From or Reply-To at an international domain is written as its A-labels and signed by that domain's key; a
subdomain signs with its parent's key (DMARC alignment)."""

from __future__ import annotations

import base64
import email
import email.policy
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from herald_delivery.domain import Member, ascii_domain, signing_domain
from herald_delivery.main import (
    DeliverySettings,
    DkimSettingInvalid,
    announce_dkim,
    dkim_keys_of,
    load_dkim_keys,
    warn_unless_https_unsubscribe,
)
from herald_delivery.render import DkimKey, MessageTokens, Rendered, Renderer, RenderSettings, compile_campaign
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner
from herald_shared.templating import TemplateProblem

SECRET = "s" * 32
MEMBER = Member("s1", "news", "anna@example.org", "active")
MESSAGE_ID = "0e6f3f0a-7f4f-5a59-9d8d-2b8f7c0c4b11"


def new_key() -> tuple[bytes, bytes]:
    """(private key in PEM, its DNS TXT record)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return private, b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)


def settings(**values: str) -> DeliverySettings:
    return DeliverySettings.model_validate({"HERALD_LINK_SECRET": SECRET, **values})


def renderer(keys: dict[str, list[DkimKey]], default: list[DkimKey] | None = None) -> Renderer:
    return Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                    LinkSigner(SECRET, "https://lists.herald.example"), keys, default or [])


def campaign(r: Renderer, **changes: str) -> Rendered:
    content = CampaignContent.model_validate({"subject": "Hi", "from_name": "Bücher", "html_body": "<p>Hi</p>",
                                              "text_body": "Hi", "from_email": "news@acme.example", **changes})
    return r.campaign_message(compile_campaign("acme", "c1", content, footer=True, settings=r.settings), MEMBER,
                              MESSAGE_ID)


def verifies(data: bytes, records: dict[str, bytes]) -> list[str]:
    """d= of each DKIM signature on the message, once dkimpy has verified them all."""
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode())
    checker = dkim.DKIM(data)
    domains = [m.group(1) for m in re.finditer(rb"\bd=([^;]+);", data.split(b"\r\n\r\n")[0])]
    assert domains, "not signed"
    for index in range(len(domains)):
        assert checker.verify(idx=index, dnsfunc=lookup)
    return [d.decode() for d in domains]


# 1. DKIM settings


def test_a_keys_folder_that_is_missing_refuses_the_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DkimSettingInvalid, match=rf"HERALD_DKIM_KEYS_DIR={tmp_path / 'typo'}: no such folder"):
        dkim_keys_of(settings(HERALD_DKIM_KEYS_DIR=str(tmp_path / "typo")))


def test_a_keys_folder_without_a_key_file_is_a_warning_and_unsigned_mail(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The manifests mount an optional secret there: a deployment whose relay signs has none to give."""
    (tmp_path / "acme.example.pem").write_bytes(new_key()[0])  # not <selector>._domainkey.<domain>.pem
    with caplog.at_level(logging.WARNING, logger="herald_delivery.main"):
        assert load_dkim_keys(tmp_path) == {}
    assert any("holds no key file" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # ... but a default domain named with no key refuses the start, as ever
    with pytest.raises(DkimSettingInvalid, match=r"HERALD_DKIM_DEFAULT_DOMAIN=acme\.example: no key file for it"):
        dkim_keys_of(settings(HERALD_DKIM_KEYS_DIR=str(tmp_path), HERALD_DKIM_DEFAULT_DOMAIN="acme.example"))


def test_a_default_domain_without_a_key_file_refuses_the_start_saying_which_keys_there_are(tmp_path: Path) -> None:
    (tmp_path / "s1._domainkey.acme.example.pem").write_bytes(new_key()[0])
    with pytest.raises(DkimSettingInvalid, match=r"HERALD_DKIM_DEFAULT_DOMAIN=herald\.example: no key file for it "
                                                 r"\(HERALD_DKIM_KEYS_DIR=.* has keys for: acme\.example\)"):
        dkim_keys_of(settings(HERALD_DKIM_KEYS_DIR=str(tmp_path), HERALD_DKIM_DEFAULT_DOMAIN="herald.example"))
    with pytest.raises(DkimSettingInvalid, match="HERALD_DKIM_KEYS_DIR is not set"):
        dkim_keys_of(settings(HERALD_DKIM_DEFAULT_DOMAIN="herald.example"))
    keys, default = dkim_keys_of(settings(HERALD_DKIM_KEYS_DIR=str(tmp_path),
                                          HERALD_DKIM_DEFAULT_DOMAIN="Acme.Example"))
    assert default == keys["acme.example"] and len(default) == 1
    assert dkim_keys_of(settings()) == ({}, [])  # no DKIM at all is a choice, not a mistake


def test_the_service_exits_non_zero_with_the_reason_on_a_bad_dkim_setting(tmp_path: Path) -> None:
    env = {**os.environ, "HERALD_LINK_SECRET": SECRET, "HERALD_DKIM_KEYS_DIR": str(tmp_path / "typo")}
    done = subprocess.run([sys.executable, "-c", "from herald_delivery.main import main; main()"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"herald-delivery: HERALD_DKIM_KEYS_DIR={tmp_path / 'typo'}: no such folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_start_logs_which_domains_sign_with_selector_and_algorithm_never_the_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    acme, platform = new_key()[0], new_key()[0]
    (tmp_path / "s1._domainkey.acme.example.pem").write_bytes(acme)
    (tmp_path / "p1._domainkey.herald.example.pem").write_bytes(platform)
    keys, default = dkim_keys_of(settings(HERALD_DKIM_KEYS_DIR=str(tmp_path),
                                          HERALD_DKIM_DEFAULT_DOMAIN="herald.example"))
    with caplog.at_level(logging.INFO, logger="herald_delivery.main"):
        announce_dkim(renderer(keys, default))
    lines = [record.getMessage() for record in caplog.records]
    assert "DKIM signs mail from acme.example and its subdomains: s=s1 a=ed25519-sha256" in lines
    assert "DKIM signs mail from other domains as herald.example: s=p1 a=ed25519-sha256" in lines
    secret_lines = [line for pem in (acme, platform) for line in pem.splitlines()[1:-1]]
    assert not any(line.decode() in text for line in secret_lines for text in lines)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="herald_delivery.main"):
        announce_dkim(renderer({}))
    assert [r.getMessage() for r in caplog.records] == [
        "DKIM: no keys: mail goes out unsigned unless the relay signs it"]


@pytest.mark.parametrize(("url", "warned"), [
    ("http://lists.herald.example", True), ("http://127.0.0.1:8085", True),
    ("https://lists.herald.example", False), ("HTTPS://lists.herald.example", False)])
def test_the_start_warns_when_unsubscribe_links_are_not_https(
        caplog: pytest.LogCaptureFixture, url: str, warned: bool) -> None:
    """RFC 8058 one-click unsubscription is for https URIs; Gmail and Yahoo ignore an http one."""
    with caplog.at_level(logging.WARNING, logger="herald_delivery.main"):
        warn_unless_https_unsubscribe(settings(HERALD_SUBSCRIPTIONS_URL=url))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warned
    assert all(f"HERALD_SUBSCRIPTIONS_URL={url} is not https" in w for w in warnings)


# 2, 3. International domains in From and Reply-To


def test_a_key_file_named_in_unicode_or_in_a_labels_keys_the_a_label_domain(tmp_path: Path) -> None:
    (tmp_path / "s1._domainkey.bücher.de.pem").write_bytes(new_key()[0])
    (tmp_path / "s2._domainkey.xn--BCHER-kva.de.pem").write_bytes(new_key()[0])
    keys = load_dkim_keys(tmp_path)
    assert list(keys) == ["xn--bcher-kva.de"]
    assert sorted((k.domain, k.selector) for k in keys["xn--bcher-kva.de"]) == [
        ("xn--bcher-kva.de", "s1"), ("xn--bcher-kva.de", "s2")]
    assert ascii_domain("Bücher.DE") == ascii_domain("xn--bcher-kva.de") == "xn--bcher-kva.de"


@pytest.mark.parametrize("key_domain", ["bücher.de", "xn--bcher-kva.de"])
@pytest.mark.parametrize("typed", ["news@bücher.de", "news@xn--bcher-kva.de"])
def test_a_from_at_an_international_domain_is_written_in_a_labels_and_signed_by_its_key(
        key_domain: str, typed: str) -> None:
    """The contract stores the domain in Unicode however it was typed; the head goes without SMTPUTF8."""
    private, record = new_key()
    rendered = campaign(renderer({key_domain: [DkimKey(key_domain, "s1", private)]}), from_email=typed)
    head = rendered.data.split(b"\r\n\r\n")[0]
    assert head.isascii()
    message = email.message_from_bytes(rendered.data, policy=email.policy.strict)
    assert message["From"].addresses[0].addr_spec == "news@xn--bcher-kva.de"
    assert message["From"].defects == ()
    assert verifies(rendered.data, {"s1._domainkey.xn--bcher-kva.de.": record}) == ["xn--bcher-kva.de"]


def test_a_reply_to_at_an_international_domain_is_written_in_a_labels() -> None:
    private, record = new_key()
    rendered = campaign(renderer({"acme.example": [DkimKey("acme.example", "s1", private)]}),
                        reply_to="help@bücher.de")
    assert rendered.data.split(b"\r\n\r\n")[0].isascii()
    message = email.message_from_bytes(rendered.data, policy=email.policy.strict)
    assert str(message["Reply-To"]) == "help@xn--bcher-kva.de" and message["Reply-To"].defects == ()
    assert verifies(rendered.data, {"s1._domainkey.acme.example.": record}) == ["acme.example"]


@pytest.mark.parametrize(("field", "address"), [("from_email", "josé@bücher.de"), ("reply_to", "josé@example.org")])
def test_a_non_ascii_local_part_refuses_the_campaign_once_with_a_reason(field: str, address: str) -> None:
    """No form of it is writable without SMTPUTF8 (RFC 6530): a TemplateProblem, which the sender keeps per
    campaign and records as `template_invalid` with this reason, rather than an encoding error per message."""
    content = CampaignContent.model_validate({"subject": "Hi", "from_name": "A", "from_email": "news@acme.example",
                                              "text_body": "Hi", field: address})
    with pytest.raises(TemplateProblem, match=rf"^{field}: {address} cannot be written .* without SMTPUTF8"):
        compile_campaign("acme", "c1", content, footer=True, settings=RenderSettings("https://t", "b.example"))


# 4. Subdomains


def test_the_signing_domain_is_the_nearest_with_keys_never_fewer_than_two_labels() -> None:
    keyed = {"acme.example", "example", "xn--bcher-kva.de"}
    assert signing_domain("acme.example", keyed) == "acme.example"
    assert signing_domain("mail.acme.example", keyed) == "acme.example"
    assert signing_domain("a.b.acme.example", keyed) == "acme.example"
    assert signing_domain("other.example", keyed) is None  # not "example": one label
    assert signing_domain("news.bücher.de", keyed) == "xn--bcher-kva.de"
    assert signing_domain("notacme.example", keyed) is None


def test_a_subdomain_signs_with_its_parents_key_so_dkim_aligns() -> None:
    """DMARC relaxed alignment (RFC 7489 3.1.1): d=acme.example aligns with From mail.acme.example; the
    platform's d=herald.example aligns with nothing of the customer's."""
    acme, acme_record = new_key()
    platform, platform_record = new_key()
    r = renderer({"acme.example": [DkimKey("acme.example", "s1", acme)]}, [DkimKey("herald.example", "p1", platform)])
    records = {"s1._domainkey.acme.example.": acme_record, "p1._domainkey.herald.example.": platform_record}
    assert verifies(campaign(r, from_email="news@mail.acme.example").data, records) == ["acme.example"]
    assert verifies(campaign(r, from_email="news@other.example").data, records) == ["herald.example"]
