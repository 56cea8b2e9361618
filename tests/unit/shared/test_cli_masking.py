"""`herald tail` and `herald dlq list` mask personal data by default (PRODUCT.md: every access by platform staff
to an account's data is in the audit log): every field the contract marks personal (`personal_data`), of every
event type, nested ones too; dead letters by what they look like. `--reveal` needs `--staff`."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from herald_shared import masking
from herald_shared.cli import CliError, Shown, Viewer, _dlq_lines, _summary, _tail_lines, main
from herald_shared.contract import EVENT_TYPES, InvalidEvent, parse_event, serialize_event
from herald_shared.kafka import DLQ_REASON, DLQ_SOURCE_TOPIC
from herald_shared.settings import HeraldSettings
from tests.conftest import free_port
from tests.samples import sample

Record = types.SimpleNamespace


def record(value: bytes, key: bytes | None = b"acc-1", headers: list[tuple[str, bytes]] | None = None) -> Any:
    return Record(topic="herald.x", partition=0, offset=7, value=value, key=key, headers=headers or [])


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (through Optional, unions, lists, maps, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _personal_fields(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(the dict holding it, its key) of every field the models mark personal, found from pydantic's own fields,
    not from the JSON Schema the CLI reads: a second derivation of the same marks."""
    found = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get(masking.PERSONAL) is True:
            found.append((data, name))
            continue
        value = data.get(name)
        values = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else []
        nested = [value] if isinstance(value, dict) else []
        for item in [*nested, *values]:
            for candidate in _models_in(field.annotation):
                if isinstance(item, dict) and set(item) <= set(candidate.model_fields):
                    found += _personal_fields(candidate, item)
    return found


def _poisoned(type_name: str) -> tuple[dict[str, Any], list[str]]:
    """The sample of `type_name` with every personal field holding a token of its own (an address's local part
    where only an address is taken; a None field filled where a token is taken): (the event, the tokens)."""
    event = json.loads(serialize_event(sample(type_name)))
    tokens: list[str] = []
    for holder, name in _personal_fields(EVENT_TYPES[type_name], event):
        original = holder.get(name)
        token = f"piitoken{len(tokens)}x"
        tries = ([token, f"{token}@example.com"] if not isinstance(original, list | dict)
                 else [[token] * len(original)] if isinstance(original, list) and original
                 else [{key: token for key in original}] if isinstance(original, dict) and original else [])
        for value in tries:
            holder[name] = value
            try:
                parse_event(json.dumps(event))
            except InvalidEvent:
                continue
            tokens.append(token)
            break
        else:
            holder[name] = original
    return event, tokens


def test_every_personal_field_of_every_event_type_is_masked_in_what_tail_prints() -> None:
    seen = 0
    for type_name in EVENT_TYPES:
        event, tokens = _poisoned(type_name)
        shown = Shown.of(record(json.dumps(event).encode()))
        assert shown.event is not None, type_name
        printed = _summary(shown, revealed=False) + json.dumps(masking.mask_event(event), ensure_ascii=False)
        for token in tokens:
            assert token not in printed, f"{type_name}: a personal field printed unmasked: {printed}"
        revealed = json.dumps(shown.event.model_dump(mode="json"))
        assert all(token in revealed for token in tokens), type_name  # the tokens were there to mask
        seen += len(tokens)
    assert seen >= 31  # every personal field of every type filled (31 on 2026-12-07)


def test_masked_values_keep_an_addresses_domain_and_none() -> None:
    event = json.loads(serialize_event(sample("SubscriberAdded")))
    event["payload"].update(email="johanna@example.com", phone=None, custom_fields={"city": "Riga", "age": 41})
    parsed = parse_event(json.dumps(event)).model_dump(mode="json")
    shown = masking.mask_event(parsed)["payload"]
    assert shown["email"] == "j•••@example.com"
    assert (shown["first_name"], shown["phone"], shown["custom_fields"]) == ("•••", None, {"city": "•••", "age": "•••"})
    assert shown["consent"]["ip"] == "•••" and shown["consent"]["source"] == "form"  # nested; the rest as it is
    assert shown["subscriber_id"] == "s1" and shown["email_sha256"] == parsed["payload"]["email_sha256"]


def test_the_personal_paths_come_from_the_contracts_schema_nested_ones_too() -> None:
    assert ("payload", "email") in masking.personal_paths("SubscriberAdded")
    assert ("payload", "consent", "ip") in masking.personal_paths("SubscriberAdded")
    assert ("payload", "client", "ip") in masking.personal_paths("LinkClicked")
    assert ("payload", "customer", "address") in masking.personal_paths("InvoiceIssued")
    assert masking.personal_paths("CampaignDeleted") == frozenset()


def test_an_address_the_contract_does_not_mark_is_masked_too() -> None:
    """Test recipients (campaigns), an account's registered address: address-like texts anywhere are masked."""
    event = json.loads(serialize_event(sample("AccountOpened")))
    line = _summary(Shown.of(record(json.dumps(event).encode())), revealed=False)
    address = event["payload"]["registered_email"]
    assert address not in line and f"{address[0]}•••@{address.split('@')[1]}" in line


def test_a_dead_letter_that_is_no_event_shows_no_address_nor_personal_key() -> None:
    broken = json.loads(serialize_event(sample("SubscriberAdded")))
    del broken["payload"]["list_id"]
    broken["note"] = "from maris.ozols@acme.example, call +371 2000"
    value = json.dumps(broken).encode()
    lines = _dlq_lines(Shown.of(record(value, headers=[(DLQ_REASON, b"invalid: anna@example.com refused"),
                                                       (DLQ_SOURCE_TOPIC, b"herald.subscriptions")])), False)
    whole = masking.mask_raw(value)  # what the listing shows, its first 200 characters
    assert lines[1] == f"    value: {whole[:200]}"
    for secret in ("anna@", "Anna", "Berzina", "maris.ozols", "203.0.113.9", "Mozilla"):
        assert secret not in lines[0] + whole, whole
    assert "a•••@example.com" in lines[0] and "a•••@example.com" in whole and "m•••@acme.example" in whole
    assert '"subscriber_id":"s1"' in whole and '"opt_in":"double"' in whole  # the rest as it is
    short = json.dumps({"type": "SubscriberAdded", "payload": {"email": "anna@example.com"}}).encode()
    assert "a•••@example.com" in _dlq_lines(Shown.of(record(short)), False)[1]
    assert "anna@example.com" in _dlq_lines(Shown.of(record(short)), True)[1]


def test_a_value_that_is_not_json_is_shown_as_its_length_only() -> None:
    value = b"From: anna@example.com\n\nDear Anna" + bytes([0xFF])
    [header, shown] = _dlq_lines(Shown.of(record(value, headers=[(DLQ_REASON, b"no signed return path")])), False)
    assert header.endswith("reason: no signed return path")
    assert shown == f"    value: <{len(value)} bytes, not JSON: not shown>"
    assert "Anna" not in _tail_lines(Shown.of(record(value)), False)[0]
    assert masking.mask_raw(b"[" * 100_000) == "<100000 bytes, not JSON: not shown>"  # too deep: no crash


ADDRESSES = st.builds(lambda local, domain: f"{local}@{domain}.example",
                      st.from_regex(r"zq[a-z0-9_+-]{4,12}", fullmatch=True),
                      st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10) | ADDRESSES,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["a", "email", "note", "first_name", "list", "x"]), inner, max_size=4),
                    max_leaves=20)


@given(JSON, st.lists(ADDRESSES, min_size=1, max_size=3))
def test_no_address_in_any_json_dead_letter_is_shown(value: Any, addresses: list[str]) -> None:
    wrapped = {"type": "SubscriberAdded", "v": value, "text": " and ".join(addresses), "emails": addresses}
    shown = masking.mask_raw(json.dumps(wrapped).encode())
    for address in addresses:
        assert address.split("@")[0][1:] not in shown.replace("•••", "")
    assert "@" not in masking.MASK


def test_reveal_needs_staff_and_staff_needs_reveal(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, said in ((["tail", "herald.billing", "--reveal"], "--reveal needs --staff NAME"),
                       (["dlq", "list", "herald.delivery", "--reveal"], "--reveal needs --staff NAME"),
                       (["tail", "herald.billing", "--staff", "rita"], "--staff goes with --reveal"),
                       (["tail", "herald.billing", "--reveal", "--staff", " "], "give your name as staff"),
                       (["dlq", "replay", "herald.delivery", "0:1", "--reveal"], "unrecognized arguments")):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert said in capsys.readouterr().err


async def test_when_the_access_cannot_be_recorded_nothing_of_the_account_is_printed(
        capsys: pytest.CaptureFixture[str]) -> None:
    """No broker to take the StaffAccessed: a CliError (exit 1) that says so, and not a line printed."""
    settings = HeraldSettings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    viewer = Viewer(settings, "rita")
    try:
        with pytest.raises(CliError, match=r"could not record the staff access .* of account.s. acc-9: .*nothing "
                                           r"of them was printed unmasked"):
            await viewer.print_lines([record(serialize_event(sample("SubscriberAdded", "acc-9")))], _tail_lines)
    finally:
        await viewer.close()
    assert capsys.readouterr().out == ""


async def test_masked_by_default_a_record_of_no_account_stays_masked_even_revealed() -> None:
    viewer = Viewer(HeraldSettings(), "rita")
    value = json.dumps({"email": "anna@example.com"}).encode()
    nobody = Shown.of(record(value, key=None))
    await viewer.record_access([nobody])  # no account: nothing to record, and no broker asked
    assert not viewer.revealed(nobody) and "anna@" not in _tail_lines(nobody, viewer.revealed(nobody))[0]
    assert not Viewer(HeraldSettings(), None).revealed(Shown.of(record(serialize_event(sample("SubscriberAdded")))))
