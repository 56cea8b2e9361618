"""The event contract: every event named in ARCHITECTURE.md exists, validates, and refuses bad input clearly."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter

from herald_shared.contract import EVENT_TYPES, InvalidEvent, parse_event, serialize_event
from herald_shared.contract.envelope import Email, checked_email
from herald_shared.contract.publish import event_schema
from herald_shared.request_fields import EmailAddress
from tests.samples import PAYLOADS, all_samples, sample

# The event names of ARCHITECTURE.md's services table, by owning topic (the public contract).
ARCHITECTURE_EVENTS = {
    "herald.subscriptions": ["ListCreated", "ListRenamed", "ListDeleted", "SubscriberAdded", "ConfirmationRequested",
                             "SubscriberConfirmed",
                             "SubscriberUnsubscribed", "SubscriberSuppressed", "SubscriberErased", "ImportCompleted"],
    "herald.campaigns": ["CampaignCreated", "CampaignEdited", "CampaignDeleted", "CampaignSubmitted",
                         "CampaignApproved", "CampaignRejected",
                         "CampaignQueued", "CampaignCancelled", "CampaignCompleted"],
    "herald.delivery": ["MessageSent", "MessageDeferred", "MessageBounced", "ComplaintReceived", "MessageOpened",
                        "LinkClicked", "DeliveryHeld"],
    "herald.compliance": ["AccountWarned", "AccountSuspended", "AccountReinstated", "ContentFlagged"],
    "herald.billing": ["AccountOpened", "AccountApproved", "ApiKeyIssued", "ApiKeyRevoked", "LoginSucceeded",
                       "LoginFailed", "PlanChanged", "TrialEnded", "QuotaExhausted", "CreditsPurchased",
                       "CreditsExpired", "PaymentFailed", "PaymentSucceeded", "InvoiceIssued", "SendingBlocked",
                       "SendingUnblocked"],
}


@pytest.mark.parametrize(("topic", "name"), [(t, n) for t, names in ARCHITECTURE_EVENTS.items() for n in names])
def test_every_architecture_event_has_a_model_on_its_topic(topic: str, name: str) -> None:
    assert EVENT_TYPES[name].topic == topic


def test_every_event_type_has_a_sample() -> None:
    assert set(PAYLOADS) == set(EVENT_TYPES)


@pytest.mark.parametrize("event", all_samples(), ids=lambda e: e.type)
def test_event_survives_serialisation_unchanged(event: object) -> None:
    assert parse_event(serialize_event(event)) == event  # type: ignore[arg-type]


def test_envelope_defaults_are_filled() -> None:
    event = parse_event({"type": "AccountApproved", "account_id": "acc-9", "producer": "x",
                         "payload": {"reviewer": "staff"}})
    assert event.schema_version == 1
    assert event.event_id is not None
    assert event.occurred_at.utcoffset() == timedelta(0)


def test_occurred_at_is_normalised_to_utc() -> None:
    riga = timezone(timedelta(hours=2))
    event = sample("AccountApproved", occurred_at=datetime(2026, 11, 2, 12, 0, tzinfo=riga).isoformat())
    assert event.occurred_at.hour == 10 and event.occurred_at.utcoffset() == timedelta(0)


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="occurred_at"):
        sample_dict = json.loads(serialize_event(sample("AccountApproved")))
        sample_dict["occurred_at"] = "2026-11-02T09:30:00"
        parse_event(sample_dict)


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_with_no_utc_equivalent_is_invalid_not_a_crash(occurred_at: str) -> None:
    raw = json.loads(serialize_event(sample("AccountApproved")))
    for value in (raw | {"occurred_at": occurred_at}, json.dumps(raw | {"occurred_at": occurred_at}).encode()):
        with pytest.raises(InvalidEvent, match="occurred_at: Value error, out of the range of times in UTC"):
            parse_event(value)


def test_a_nul_character_in_any_text_is_invalid_and_an_escaped_backslash_is_not_one() -> None:
    raw = json.loads(serialize_event(sample("ListCreated")))
    nul = raw | {"payload": raw["payload"] | {"name": "Acme\x00Ltd"}}
    for value in (nul, json.dumps(nul).encode(), json.dumps(nul)):
        with pytest.raises(InvalidEvent, match="NUL character"):
            parse_event(value)
    backslash = raw | {"payload": raw["payload"] | {"name": "Acme \\u0000 Ltd"}}  # the text "\u0000"
    assert "\\u0000" in json.dumps(backslash)
    assert parse_event(json.dumps(backslash).encode()).payload.name == "Acme \\u0000 Ltd"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"account_id": "a"}', "missing or non-string 'type'"),
    (b'{"type": "MessageExploded", "account_id": "a"}', "unknown event type 'MessageExploded'"),
    (b"\xff\xfe", "not JSON"),
])
def test_unparseable_input_gets_a_clear_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(raw)


def test_missing_payload_field_is_named_in_the_reason() -> None:
    data = json.loads(serialize_event(sample("MessageBounced")))
    del data["payload"]["bounce_class"]
    with pytest.raises(InvalidEvent, match=r"invalid MessageBounced: payload\.bounce_class: Field required"):
        parse_event(data)


def test_unknown_fields_are_refused_not_dropped() -> None:
    data = json.loads(serialize_event(sample("MessageSent")))
    data["payload"]["surprise"] = 1
    with pytest.raises(InvalidEvent, match=r"payload\.surprise"):
        parse_event(data)


@pytest.mark.parametrize(("type_name", "path"), [
    ("CampaignQueued", ("payload", "send_at")), ("SubscriberAdded", ("payload", "consent", "collected_at")),
    ("MessageDeferred", ("payload", "next_attempt_at")), ("PlanChanged", ("payload", "effective_at")),
    ("MessageSent", ("occurred_at",))])
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:00-01:00"])
def test_a_time_with_an_offset_that_is_no_time_in_utc_is_refused_wherever_it_stands(
        type_name: str, path: tuple[str, ...], moment: str) -> None:
    """No consumer's store could keep it (MongoDB keeps UTC; the driver raises OverflowError), whatever the retry."""
    data = json.loads(serialize_event(sample(type_name)))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = moment
    with pytest.raises(InvalidEvent, match=f"invalid {type_name}: .*(no time in UTC|out of the range)"):
        parse_event(data)
    node[path[-1]] = moment.replace("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00-01:00").replace(
        "9999-12-31T23:59:00-01:00", "9999-12-31T23:59:00+01:00")  # the same clock time, in UTC: taken
    assert parse_event(data).type == type_name


def test_a_future_schema_version_is_refused() -> None:
    data = json.loads(serialize_event(sample("MessageSent")))
    data["schema_version"] = 2
    with pytest.raises(InvalidEvent, match="unsupported schema_version 2"):
        parse_event(data)


def test_bad_email_address_is_refused() -> None:
    data = json.loads(serialize_event(sample("SubscriberAdded")))
    data["payload"]["email"] = "not-an-address"
    with pytest.raises(InvalidEvent, match=r"payload\.email"):
        parse_event(data)


def test_an_added_subscribers_hash_is_read_as_that_of_its_address_lower_cased() -> None:
    """Export and erasure find a person by that hash: one of the address as a CRM wrote it (its case) would hide
    the member from both. It is read as the hash it stands for (not refused: such events recorded before the rule
    are folded again by a rebuild), and written so again."""
    import hashlib

    data = json.loads(serialize_event(sample("SubscriberAdded")))
    data["payload"]["email"] = "Anna.Berzina@Example.com"
    data["payload"]["email_sha256"] = hashlib.sha256(b"Anna.Berzina@Example.com").hexdigest()
    event = parse_event(data)
    lower = hashlib.sha256(b"anna.berzina@example.com").hexdigest()
    assert event.payload.email_sha256 == lower  # type: ignore[attr-defined]
    assert json.loads(serialize_event(event))["payload"]["email_sha256"] == lower
    assert parse_event(serialize_event(event)) == event


def test_events_are_immutable() -> None:
    event = sample("MessageSent")
    with pytest.raises(ValueError, match="frozen"):
        event.account_id = "other"  # type: ignore[misc]


def test_caused_event_keeps_account_and_flow() -> None:
    cause = sample("MessageBounced")
    effect = sample("SubscriberSuppressed", **cause.caused())
    assert effect.account_id == cause.account_id
    assert effect.causation_id == cause.event_id
    assert effect.correlation_id == cause.event_id


def test_personal_data_is_marked_in_the_published_schema() -> None:
    added = event_schema(EVENT_TYPES["SubscriberAdded"])
    payload = added["$defs"]["SubscriberAddedPayload"]["properties"]
    assert payload["email"]["x-personal-data"] is True
    assert "x-personal-data" not in payload["list_id"]


def test_complaint_payload_carries_no_complainer_address() -> None:
    """PRODUCT.md, Termination 1: the addresses of people who complained are never disclosed."""
    schema = json.dumps(event_schema(EVENT_TYPES["ComplaintReceived"]))
    assert "email" not in schema.lower()


def test_an_address_in_normal_form_is_checked_once_by_requests_and_events() -> None:
    checked_email.cache_clear()
    address = "new.reader@acme-news.com"
    assert TypeAdapter(EmailAddress).validate_python(address) == address
    assert TypeAdapter(Email).validate_python(address) == address
    assert checked_email.cache_info().misses == 1, "the event reuses the request's check"
    # A form that is not normal is checked as given, and its normal form (lower-cased) once more.
    assert TypeAdapter(EmailAddress).validate_python("New.Reader@ACME-news.com") == address
    with pytest.raises(ValueError, match="valid"):
        TypeAdapter(Email).validate_python("Reader <new.reader@acme-news.com>")
