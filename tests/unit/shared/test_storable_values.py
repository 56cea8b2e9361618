"""The contract refuses what no read model's store keeps (integers beyond signed 64 bits, NaN and Infinity, map
keys with a '.', a leading '$' or a NUL), so such an event is dead-lettered when read instead of holding its
partition back at every flush (ARCHITECTURE.md, principle 6); the HTTP inputs refuse the same with a 422."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter, ValidationError

from herald_shared.contract import EVENT_TYPES, InvalidEvent, parse_event, serialize_event
from herald_shared.contract.envelope import INT64_MAX, INT64_MIN
from herald_shared.contract.publish import event_schema
from herald_shared.contract.subscriptions import ImportCompleted
from herald_shared.request_fields import FieldValueIn
from tests.samples import sample

Change = Callable[[dict[str, Any]], Any]
BEYOND = 2**70


def wire(type_name: str, change: Change) -> str:
    """A sample event of the type as JSON, its payload changed; Python's JSON writes NaN and Infinity as
    such (what a careless producer sends)."""
    doc = json.loads(serialize_event(sample(type_name, "acc-1")))
    change(doc["payload"])
    return json.dumps(doc)


def _field(name: str, value: Any) -> Change:
    return lambda p: p["custom_fields"].update({name: value})


UNSTORABLE: dict[str, tuple[str, Change, str]] = {
    "custom field 2**70": ("SubscriberAdded", _field("city", BEYOND), "beyond signed 64 bits"),
    "custom field -2**70": ("SubscriberAdded", _field("city", -BEYOND), "beyond signed 64 bits"),
    "custom field Infinity": ("SubscriberAdded", _field("city", float("inf")), "finite number"),
    "custom field NaN": ("SubscriberAdded", _field("city", float("nan")), "finite number"),
    "Count 2**63": ("ImportCompleted", lambda p: p.update(rows_total=INT64_MAX + 1), "beyond signed 64 bits"),
    "Count in a map 2**70": ("ImportCompleted", lambda p: p.update(rejected_by_reason={"bad": BEYOND}),
                             "beyond signed 64 bits"),
    "map key with a dot": ("ImportCompleted", lambda p: p.update(rejected_by_reason={"a.b": 1}), "pattern"),
    "map key with a leading $": ("AccountWarned", lambda p: p.update(evidence={"$where": 1}), "pattern"),
    "map key with a NUL": ("AccountWarned", lambda p: p.update(evidence={"a\0": 1}), "pattern"),
    "evidence 2**70": ("AccountWarned", lambda p: p.update(evidence={"n": BEYOND}), "beyond signed 64 bits"),
    "evidence Infinity": ("AccountWarned", lambda p: p.update(evidence={"n": float("-inf")}), "finite number"),
    "segment value 2**70": ("CampaignQueued", lambda p: p["segment"]["field_equals"].update(city=BEYOND),
                            "beyond signed 64 bits"),
    "campaign recipients 2**70": ("CampaignCompleted", lambda p: p.update(recipients=BEYOND),
                                  "beyond signed 64 bits"),
    "attempt 2**70": ("MessageSent", lambda p: p.update(attempt=BEYOND), "beyond signed 64 bits"),
    "link index 2**70": ("LinkClicked", lambda p: p.update(link_index=BEYOND), "beyond signed 64 bits"),
    "sent 2**70": ("CampaignDeliveryFinished", lambda p: p.update(sent=BEYOND), "beyond signed 64 bits"),
    # What billing folds into accounts and invoices.
    "credits 2**70": ("CreditsPurchased", lambda p: p.update(credits=BEYOND), "beyond signed 64 bits"),
    "tier subscriber limit 2**70": ("PlanChanged", lambda p: p.update(tier_subscriber_limit=BEYOND),
                                    "beyond signed 64 bits"),
    "payment attempt 2**70": ("PaymentFailed", lambda p: p.update(attempt=BEYOND), "beyond signed 64 bits"),
    "purchase's tier limit 2**63": ("InvoiceIssued", lambda p: p["purchase"].update(tier_subscriber_limit=2**63),
                                    "beyond signed 64 bits"),
    "purchase's credits 2**70": ("InvoiceIssued", lambda p: p["purchase"].update(credits=BEYOND),
                                 "beyond signed 64 bits"),
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
def test_a_value_no_store_keeps_is_refused_with_why(case: str) -> None:
    type_name, change, why = UNSTORABLE[case]
    with pytest.raises(InvalidEvent, match=why):
        parse_event(wire(type_name, change))


STORABLE: dict[str, tuple[str, Change]] = {
    "custom field 2**63-1": ("SubscriberAdded", _field("city", INT64_MAX)),
    "custom field -2**63": ("SubscriberAdded", _field("city", INT64_MIN)),
    "custom field a float beyond 64 bits": ("SubscriberAdded", _field("city", 1.5e300)),
    "custom field text of digits": ("SubscriberAdded", _field("city", str(BEYOND))),
    "Count 2**63-1": ("ImportCompleted", lambda p: p.update(rows_total=INT64_MAX)),
    "map keys with '$' inside, spaces, none": ("ImportCompleted",
                                               lambda p: p.update(rejected_by_reason={"a$": 1, "bad email": 2,
                                                                                      "": 3})),
    "evidence of each kind": ("AccountWarned", lambda p: p.update(evidence={"t": "x", "n": 3, "f": 0.5})),
    "credits 2**63-1": ("CreditsPurchased", lambda p: p.update(credits=INT64_MAX)),
    "tier subscriber limit 2**63-1": ("PlanChanged", lambda p: p.update(tier_subscriber_limit=INT64_MAX)),
    "payment attempt 2**63-1": ("PaymentFailed", lambda p: p.update(attempt=INT64_MAX)),
}


@pytest.mark.parametrize("case", sorted(STORABLE))
def test_what_a_store_keeps_is_still_accepted_as_it_is(case: str) -> None:
    type_name, change = STORABLE[case]
    raw = wire(type_name, change)
    assert json.loads(serialize_event(parse_event(raw)))["payload"] == json.loads(raw)["payload"]


def test_the_published_schema_names_the_keys_pattern_and_finite_numbers() -> None:
    schema = event_schema(ImportCompleted)
    validator = Draft202012Validator(schema)
    assert list(validator.iter_errors(json.loads(wire("ImportCompleted",
                                                      lambda p: p.update(rejected_by_reason={"a.b": 1})))))
    assert list(validator.iter_errors(json.loads(wire("ImportCompleted",
                                                      lambda p: p.update(rejected_by_reason={"$x": 1})))))
    assert list(validator.iter_errors(json.loads(wire("ImportCompleted",
                                                      lambda p: p.update(rejected_by_reason={"ok": "text"})))))
    assert not list(validator.iter_errors(json.loads(wire("ImportCompleted",
                                                          lambda p: p.update(rejected_by_reason={"ok": 1})))))
    assert "A finite number (no NaN, no Infinity)." in json.dumps(event_schema(EVENT_TYPES["SubscriberAdded"]))


REQUEST_VALUES: list[tuple[Any, bool]] = [
    (INT64_MAX, True), (INT64_MIN, True), (1.5, True), (9.2e18, True), ("x" * 1000, True), (True, True), (None, True),
    (INT64_MAX + 1, False), (INT64_MIN - 1, False), (BEYOND, False), (1e30, False), (float("inf"), False),
    (float("nan"), False)]


@pytest.mark.parametrize(("value", "taken"), REQUEST_VALUES, ids=[repr(v) for v, _ in REQUEST_VALUES])
def test_an_api_custom_field_value_is_one_a_store_keeps_as_its_schema_says(value: Any, taken: bool) -> None:
    """What FieldValueIn refuses is a 422, and its schema says so: a value is taken exactly when the schema
    allows it (NaN and Infinity aside: JSON has neither)."""
    adapter: TypeAdapter[Any] = TypeAdapter(FieldValueIn)
    try:
        kept = adapter.validate_python(value)
    except ValidationError:
        kept = ValidationError
    assert (kept is not ValidationError) == taken
    if taken:
        assert kept == value and type(kept) is type(value)  # an integer never passes as a float
    if isinstance(value, int) or (isinstance(value, float) and abs(value) != float("inf") and value == value):
        schema_allows = not list(Draft202012Validator(adapter.json_schema()).iter_errors(value))
        assert schema_allows == taken
