"""What Herald's HTTP APIs take, each type with the schema that says so exactly: what a schema allows is
accepted, and what it refuses is a 422 (schemathesis holds every service to that in CI)."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated

from email_validator import EmailNotValidError
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StringConstraints,
)
from pydantic.json_schema import WithJsonSchema

from .contract.envelope import INT64_MAX, INT64_MIN, checked_email

# An address: ASCII (delivery cannot send to SMTPUTF8 addresses), a dot-atom local part of at most 64
# characters, a domain name whose top level is not special-use (RFC 6761), and email-validator's checks (no
# DNS look-up); normalised and lower-cased.
EMAIL_PATTERN = (
    r"^(?![^@]{65})[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    # email-validator's special-use top-level names, in any case; labels never "ab--" (that is Punycode)
    r"(?!.*\.(" + "|".join("".join(f"[{c}{c.upper()}]" for c in name)
                            for name in ("test", "invalid", "local", "localhost", "onion", "arpa")) + r")$)"
    r"((?![A-Za-z0-9]{2}--)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
EMAIL = re.compile(EMAIL_PATTERN)


def sendable_email(value: str) -> str:
    """The address normalised and lower-cased, if it is one Herald can send to (above); ValueError, with why,
    if not. The API's addresses and the subscriptions rules (form, import) both check with it."""
    if not EMAIL.fullmatch(value):
        raise ValueError("not an email address this API takes: an ASCII dot-atom local part (at most 64 "
                         "characters) @ a domain name whose top level is not special-use")
    try:
        return checked_email(value).lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


EmailAddress = Annotated[str, StringConstraints(min_length=6, max_length=254), AfterValidator(sendable_email),
                         WithJsonSchema({"type": "string", "format": "email", "minLength": 6, "maxLength": 254,
                                         "pattern": EMAIL_PATTERN})]



def is_ip_address(text: str) -> bool:
    """An IPv4 or IPv6 address (what consent evidence's IP must be, on every channel)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _ip_address(value: str) -> str:
    if not is_ip_address(value):
        raise ValueError("not an IPv4 or IPv6 address")
    return value


IpAddress = Annotated[str, StringConstraints(max_length=100), AfterValidator(_ip_address),
                      WithJsonSchema({"anyOf": [{"type": "string", "format": "ipv4"},
                                                {"type": "string", "format": "ipv6"}], "maxLength": 100})]

# Text holds no NUL character: PostgreSQL's jsonb (under FerretDB) cannot store one, so an event carrying it
# could never be folded into a read model.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)]
NameText = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
# A custom field's value (subscribers, segments, merge values), each JSON type as itself: a string is never
# read as a number (pydantic's lax mode would take "000" for 0, past the string's length limit). A number is
# one the read models' store keeps (`contract.envelope.INT64_MAX`): an integer of signed 64 bits, and a float
# within that range too, else a larger integer would pass as a float (its digits lost) instead of a 422.
FieldValueIn = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | \
    Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)] | \
    Annotated[float, Strict(), Field(gt=INT64_MIN, lt=INT64_MAX + 1, allow_inf_nan=False)] | StrictBool | None


def _iso_text(expected: str) -> BeforeValidator:
    """JSON carries times as ISO 8601 text; a number is not taken for one (pydantic would read it as Unix time)."""
    def check(value: object) -> object:
        if not isinstance(value, str | datetime):
            raise ValueError(f"a time is ISO 8601 text{expected}")
        return value
    return BeforeValidator(check)


IsoTime = Annotated[AwareDatetime, _iso_text(" with its offset, e.g. 2026-11-02T09:00:00Z")]
# A wall-clock time with or without an offset (a local one is read in a time zone given beside it).
LocalOrAwareTime = Annotated[datetime, _iso_text(": local (2026-12-24T09:00:00, in time_zone) or with an offset")]


class Body(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """An answer, as the OpenAPI document describes it (routes build the JSON; schemathesis checks it)."""

    model_config = ConfigDict(extra="forbid")
