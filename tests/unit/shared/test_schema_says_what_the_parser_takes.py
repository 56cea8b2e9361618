"""What the published schemas allow, the parser takes, and the reverse: a producer following the schema is not
dead-lettered, and what Herald writes a schema-following consumer reads. URLs, addresses, times, digits."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import jsonschema_rs
import pytest
from email_validator import EmailNotValidError
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from herald_delivery.domain import SmtpReply, classify_bounce, smtp_code_in, status_in
from herald_shared.contract import EVENT_TYPES, InvalidEvent, parse_event, serialize_event
from herald_shared.contract.compat import PARSED_FORMAT_PATTERNS
from herald_shared.contract.envelope import EMAIL_PATTERN, HTTP_URL_PATTERN, checked_email
from herald_shared.contract.publish import SCHEMA_DIR, schema_filename
from tests.samples import sample


def published(type_name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / "events" / schema_filename(EVENT_TYPES[type_name])).read_text())


def schema_takes(wire: dict[str, Any]) -> bool:
    return Draft202012Validator(published(wire["type"])).is_valid(wire)


def parser_takes(wire: dict[str, Any]) -> bool:
    try:
        parse_event(json.dumps(wire))
    except InvalidEvent:
        return False
    return True


def with_payload(type_name: str, **changes: Any) -> dict[str, Any]:
    wire = json.loads(serialize_event(sample(type_name)))
    wire["payload"].update(changes)
    return wire


def nodes(schema: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(schema, dict):
        found.append(schema)
        for value in schema.values():
            found += nodes(value)
    elif isinstance(schema, list):
        for value in schema:
            found += nodes(value)
    return found


# --- URLs -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "taken"), [
    ("https://acme.example/offer", True), ("HTTP://ACME.EXAMPLE", True), ("http://10.0.0.1:8080/a?b=c#d", True),
    ("https:acme.example", True),  # an RFC 3986 URI WHATWG reads as https://acme.example/
    ("ftp://files.example/x", False), ("mailto:anna@example.com", False), ("urn:isbn:0451450523", False),
    ("https://", False), ("https:?x", False),
])
def test_a_url_field_takes_what_the_published_pattern_takes(url: str, taken: bool) -> None:
    for type_name, field in (("ConfirmationRequested", "confirm_url"), ("LinkClicked", "url")):
        wire = with_payload(type_name, **{field: url})
        assert parser_takes(wire) is taken, (type_name, url)
        assert schema_takes(wire) is taken, (type_name, url)


@pytest.mark.parametrize("url", [
    "https://shop.example/?q=a|b", "https://shop.example/?x=[1]", "https://shop.example/a^b",
    "https://shop.example/?q=a`b", "https://shop.example/a{b}", "https://shop.example/a%zz",
    "https://shop.example/#frag%", "https://shop.example/p?a=1#x#y", "https://Shop.example/ä?ö=ü#ß",
])
def test_a_url_herald_writes_is_a_uri_to_a_validator_checking_formats(url: str) -> None:
    """WHATWG parsing (pydantic's AnyHttpUrl) keeps characters RFC 3986 refuses in a path, query or fragment; a
    consumer validating the published `format: uri` would refuse the LinkClicked Herald wrote with them. Herald
    writes them percent-encoded; what was encoded already stays as it is."""
    uri = jsonschema_rs.validator_for({"type": "string", "format": "uri"}, validate_formats=True)
    for type_name, field in (("ConfirmationRequested", "confirm_url"), ("LinkClicked", "url")):
        event = parse_event(json.dumps(with_payload(type_name, **{field: url})))
        written = json.loads(serialize_event(event))
        assert uri.is_valid(written["payload"][field]), (type_name, written["payload"][field])
        assert jsonschema_rs.validator_for(published(type_name), validate_formats=True).is_valid(written)
    assert str(parse_event(json.dumps(with_payload("LinkClicked", url="https://x.example/a%20b?c=%7C"))).payload
               .url) == "https://x.example/a%20b?c=%7C"  # type: ignore[attr-defined]


# --- addresses --------------------------------------------------------------------------------------------------

REFUSED_SHAPES = ['"anna b"@example.com', "anna@[192.0.2.1]", "anna@localhost", "anna@shop.test",
                  "anna@printer.local", "anna@x.invalid", "anna@hidden.onion", "anna@1.2.in-addr.arpa",
                  "anna@shop.TEST", "anna@münchen。test"]


@pytest.mark.parametrize("address", REFUSED_SHAPES)
def test_an_address_shape_the_parser_refuses_the_schema_refuses(address: str) -> None:
    wire = with_payload("SubscriberAdded", email=address,
                        email_sha256=hashlib.sha256(address.lower().encode()).hexdigest())
    assert not parser_takes(wire)
    assert not schema_takes(wire)


def parsed(address: str) -> str | None:
    try:
        return checked_email(address)
    except EmailNotValidError:
        return None


LOCAL = st.text("aZ09_+-.!#$%&'*/=?^`{|}~\"(),:;<>[\\] éü", min_size=0, max_size=20)
LABEL = st.text("az09-AZéü_", min_size=0, max_size=12)
DOTS = st.sampled_from([".", "\u3002", "\uff0e", "\uff61", ".."])
TLD = st.one_of(LABEL, st.sampled_from(["test", "Local", "LOCALHOST", "arpa", "onion", "invalid", "com", "lv"]))


@settings(max_examples=1500)
@given(st.builds(lambda local, labels, dot, tld: f"{local}@{dot.join([*labels, tld])}",
                 LOCAL, st.lists(LABEL, min_size=0, max_size=3), DOTS, TLD))
@example("anna@münchen\u3002example")
@example("jürgen@example.com")
@example("a@xn--bcher-kva.example")
def test_every_address_the_parser_takes_matches_the_published_pattern(address: str) -> None:
    """As the producer wrote it and as Herald writes it back (normalised)."""
    normalised = parsed(address)
    if normalised is not None:
        assert re.search(EMAIL_PATTERN, address), address
        assert re.search(EMAIL_PATTERN, normalised), normalised


def test_an_international_address_herald_writes_is_valid_under_its_schema() -> None:
    address = "jürgen@münchen.example"
    wire = with_payload("SubscriberAdded", email=address, email_sha256=hashlib.sha256(address.encode()).hexdigest())
    assert parser_takes(wire) and schema_takes(wire)
    assert published("SubscriberAdded")["$defs"]["SubscriberAddedPayload"]["properties"]["email"]["format"] == \
        "idn-email"


# --- formats read as the parser reads them ----------------------------------------------------------------------

def test_every_published_field_of_a_parsed_format_carries_the_parsers_pattern() -> None:
    """What makes the compatibility check's one allowance sound: no field is published with `format: uri` or an
    email format alone, so none read another way could later gain the pattern as if it always held."""
    for type_name in EVENT_TYPES:
        for node in nodes(published(type_name)):
            if node.get("format") in PARSED_FORMAT_PATTERNS:
                assert node.get("pattern") == PARSED_FORMAT_PATTERNS[node["format"]], (type_name, node)
    assert PARSED_FORMAT_PATTERNS["uri"] == HTTP_URL_PATTERN


def test_a_leap_second_is_refused_and_every_time_field_says_so() -> None:
    wire = json.loads(serialize_event(sample("AccountApproved")))
    wire["occurred_at"] = "2016-12-31T23:59:60Z"
    assert not parser_takes(wire)
    for type_name in EVENT_TYPES:
        times = [node for node in nodes(published(type_name)) if node.get("format") == "date-time"]
        assert times and all("leap second (:60) is refused" in node["description"] for node in times), type_name


# --- digits -----------------------------------------------------------------------------------------------------

ARABIC_ONE, FULLWIDTH_TWO, DEVANAGARI_TWO = "\u0661", "\uff12", "\u0968"


def test_no_published_pattern_says_digits_as_d() -> None:
    r"""\d is [0-9] in ECMA-262, the schemas' dialect, and any script's digit in Python and pydantic: spelled
    [0-9], both read it alike."""
    for type_name in EVENT_TYPES:
        for node in nodes(published(type_name)):
            assert "\\d" not in node.get("pattern", ""), (type_name, node["pattern"])


@pytest.mark.parametrize(("type_name", "path", "value"), [
    ("MessageBounced", ("enhanced_status_code",), f"5.1.{ARABIC_ONE}"),
    ("AccountWarned", ("scope", "window"), f"2{DEVANAGARI_TWO}h"),
    ("InvoiceIssued", ("vat_percent",), f"{FULLWIDTH_TWO}1"),
])
def test_a_digit_of_another_script_is_refused_by_parser_and_schema_alike(
        type_name: str, path: tuple[str, ...], value: str) -> None:
    wire = json.loads(serialize_event(sample(type_name)))
    node = wire["payload"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value.translate({ord(ARABIC_ONE): "1", ord(DEVANAGARI_TWO): "2", ord(FULLWIDTH_TWO): "2"})
    assert parser_takes(wire) and schema_takes(wire), "the ASCII twin is taken"
    node[path[-1]] = value
    assert not parser_takes(wire)
    assert not schema_takes(wire)


def test_delivery_reads_no_status_or_code_from_digits_of_another_script() -> None:
    """A bounce saying 550 5.1.{Arabic one} once made a MessageBounced Herald's parser took and its schema refused."""
    text = f"<anna@example.com>: host mx said: 550 5.1.{ARABIC_ONE} user unknown"
    assert status_in(text) is None
    assert status_in("host mx said: 550 5.1.1 user unknown") == "5.1.1"
    assert status_in(f"550 5.1.1{ARABIC_ONE} user unknown") is None
    assert SmtpReply(550, f"5.1.{ARABIC_ONE} user unknown").enhanced_status is None
    assert SmtpReply(550, "5.1.1 user unknown").enhanced_status == "5.1.1"
    assert smtp_code_in(f"said: 55{ARABIC_ONE} no") is None
    assert classify_bounce(status=None, smtp_code=None, text=text).bounce_class == "hard"  # by its words still
