"""The envelope every Herald event carries, and the field types the payloads share."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, NamedTuple
from uuid import UUID, uuid4

from email_validator import SPECIAL_USE_DOMAIN_NAMES, validate_email
from email_validator.rfc_constants import (
    DNS_LABEL_LENGTH_LIMIT,
    DOMAIN_MAX_LENGTH,
    EMAIL_MAX_LENGTH,
    LOCAL_PART_MAX_LENGTH,
)
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue, WithJsonSchema
from pydantic_core import CoreSchema, PydanticCustomError

from .. import correlation

# The most one Kafka record may hold as Herald's producers send it (aiokafka's max_request_size, counted on the
# record's key, value, headers and batch overhead before any compression; its default, and the broker's
# message.max.bytes of 1,048,588 leaves no more): `herald_shared.kafka.make_producer` passes it. Named here, not in
# the Kafka adapter, because the contract bounds its longest texts by it and imports no adapter.
MAX_REQUEST_BYTES = 1_048_576

# Identifiers are opaque strings chosen by the owning service (ULIDs, UUIDs, slugs).
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
AccountId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
ShortText = Annotated[str, StringConstraints(max_length=1000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# A lowercase hex SHA-256 of a normalised email address: lets consumers match an address
# (suppression, erasure) without holding it.
EmailHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

# What no read model's store keeps, refused by the contract (README, "The event contract"): an event the contract
# took and no projection can write would hold its partition back for good. BSON's integers are signed 64-bit
# (PyMongo refuses a larger one); JSON has no NaN or Infinity, and FerretDB refuses them (NaN drops the
# connection); a key with a '.' or a leading '$' is a path or an operator to MongoDB, and PostgreSQL's jsonb
# holds no NUL. The published schemas show the keys' pattern; the integers' range is not in them, since the
# compatibility rules (`compat`) read any new `maximum` as a narrowing, and this one only refuses what could
# never be stored.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def within_64_bits(value: Any) -> Any:
    """An integer a store can keep (signed 64 bits); anything else is left to the type's own validation."""
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("an integer beyond signed 64 bits, which no read model can store")
    return value


# On an integer type: checked after it is read. On a union of int and float: before, or the float takes it.
StorableInt = AfterValidator(within_64_bits)
StorableNumber = BeforeValidator(within_64_bits)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, description="A finite number (no NaN, no Infinity).")]
# A key of a free-form map (reasons, evidence): no '.', no leading '$', no NUL.
MAP_KEY_PATTERN = r"^([^.$\x00][^.\x00]*)?$"
MapKey = Annotated[str, StringConstraints(max_length=64, pattern=MAP_KEY_PATTERN)]


class KeysNamedByPattern:
    """On a `dict[MapKey, V]`: the schema says the keys' pattern as `propertyNames` and the values as
    `additionalProperties` (pydantic writes `patternProperties`, which lets a key of any other form through
    with any value)."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        ((pattern, values),) = json_schema.pop("patternProperties").items()
        json_schema["additionalProperties"] = values
        json_schema["propertyNames"] = {**json_schema.get("propertyNames", {}), "pattern": pattern}
        return json_schema


Cents = Annotated[int, Field(ge=0), StorableInt]
Currency = Literal["EUR"]
Count = Annotated[int, Field(ge=0), StorableInt]


def personal_data(description: str, **kwargs: Any) -> Any:
    """A field holding personal data; marked `x-personal-data` in the published JSON Schema."""
    return Field(description=description, json_schema_extra={"x-personal-data": True}, **kwargs)


def utc_now() -> datetime:
    return datetime.now(UTC)


# A plain address that email-validator accepts and leaves as it is: a dot-atom local part of common characters
# and a lowercase ASCII host name of two or more labels ending in letters. No "--" anywhere in the domain
# (Punycode and R-LDH labels take email-validator's longer path), and the length limits of RFC 5321.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]+")


def _plainly_valid(value: str) -> bool:
    """True only for an address that email-validator accepts unchanged (tested as a property against it)."""
    if len(value) > EMAIL_MAX_LENGTH or _PLAIN_ADDRESS.fullmatch(value) is None:
        return False
    local, domain = value.split("@")
    labels = domain.split(".")
    return (len(local) <= LOCAL_PART_MAX_LENGTH and len(domain) <= DOMAIN_MAX_LENGTH and "--" not in domain
            and all(len(label) <= DNS_LABEL_LENGTH_LIMIT for label in labels)
            and labels[-1] not in SPECIAL_USE_DOMAIN_NAMES)


@lru_cache(maxsize=1 << 16)
def checked_email(value: str) -> str:
    """An address checked and normalised by email-validator (syntax only, no DNS); raises its
    EmailNotValidError, a ValueError. A plain address in its normal form (most of them) is recognised by one
    regular expression first, ~1 us instead of ~25 us. Remembered: one address is checked where a request or
    a row is read, where it is decided, where its event is made and where that is read back, often in one
    process moments apart. The services and request models check addresses with this function too
    (`.lower()` for identity). A pure function of the string; failures are not kept."""
    if _plainly_valid(value):
        return value
    return validate_email(value, check_deliverability=False).normalized


# What the published schemas say of an address, beyond `format` (JSON Schema's "email" is ASCII only, and says
# nothing of what email-validator refuses besides its syntax): no quoted local part, no IP-literal domain, two or
# more labels (a dot as IDNA reads one, "。" too), and no special-use name (email-validator's
# SPECIAL_USE_DOMAIN_NAMES, in any case). Lookahead only, in the portable subset of ECMA-262 JSON Schema names.
# A superset of what `checked_email` accepts, tested as a property against it.
_DOT = "[.\\u3002\\uff0e\\uff61]"
_SPECIAL_USE = "|".join("".join(f"[{c.upper()}{c}]" for c in name) for name in sorted(SPECIAL_USE_DOMAIN_NAMES))
EMAIL_PATTERN = (f'^[^"@]+@(?!\\[)(?![^@]*{_DOT}(?:{_SPECIAL_USE})$)[^@]+{_DOT}'
                 f'[^@.\\u3002\\uff0e\\uff61]+$')
EMAIL_RULES = (
    "An address as Herald's parser takes it (Python's email-validator, without DNS): internationalised addresses "
    "are taken (SMTPUTF8); a quoted local part, an IP-literal domain, a domain of one label and a special-use "
    f"domain ({', '.join(sorted(SPECIAL_USE_DOMAIN_NAMES))}) are refused (the pattern says these). Refused too, "
    "which the pattern does not say: more than 64 octets before the @ or 254 in all, characters email-validator "
    "deems unsafe (controls, zero-width and other format characters), a dot at either end of the local part or "
    "two in a row, a last label that cannot be a top-level domain (digits only, say), and a domain that IDNA "
    "refuses. Herald writes addresses normalised: the domain lower-cased, IDNA labels in Unicode.")
Email = Annotated[str, AfterValidator(checked_email),
                  WithJsonSchema({"type": "string", "format": "idn-email", "pattern": EMAIL_PATTERN})]

# An http or https URL, as pydantic's AnyHttpUrl (WHATWG URL parsing) takes it. Within `format: uri` (RFC 3986:
# no spaces or controls, so the scheme comes first) the pattern is what that parser adds: the scheme in any case
# and a host (it skips any number of slashes after the scheme, and a backslash counts as one).
HTTP_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?:[/\\]*[^/\\?#]"
HTTP_URL_RULES = (
    "An absolute http or https URL with a host (the scheme in any case). Herald writes it normalised "
    "(scheme://host/path, scheme and host lower-cased); it reads one the way browsers do (WHATWG URL), and "
    "refuses a host WHATWG refuses (an invalid international domain name, a port beyond 65535).")
# What RFC 3986 takes as written after the authority (a path's, query's or fragment's characters, and the "?" and
# "#" that start the last two); WHATWG parsing leaves others there as written (| ^ ` { } [ ] and a "%" that starts
# no escape), which a validator of `format: uri` refuses: Herald writes them percent-encoded, as browsers send them.
_URI_TAIL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_AUTHORITY = re.compile(r"^[^:]+://[^/?#]*")


def _percent_encoded(part: str) -> str:
    return "".join(c if c in _URI_TAIL else "".join(f"%{b:02X}" for b in c.encode()) for c in part)


def rfc3986_url(url: AnyHttpUrl) -> AnyHttpUrl:
    """The URL with what RFC 3986 refuses in its path, query and fragment percent-encoded (the same resource to a
    server: a browser sends those characters so)."""
    text = str(url)
    authority = _AUTHORITY.match(text)
    if authority is None:
        return url
    head, tail = text[:authority.end()], text[authority.end():]
    if all(c in _URI_TAIL or c == "#" for c in tail) and tail.count("#") <= 1 and not _STRAY_PERCENT.search(tail):
        return url
    rest, hash_mark, fragment = _STRAY_PERCENT.sub("%25", tail).partition("#")
    encoded = _percent_encoded(rest) + (hash_mark + _percent_encoded(fragment) if hash_mark else "")
    return AnyHttpUrl(head + encoded)


HttpUrl = Annotated[AnyHttpUrl, AfterValidator(rfc3986_url), WithJsonSchema(
    {"type": "string", "format": "uri", "minLength": 1, "pattern": HTTP_URL_PATTERN})]

DATE_TIME_RULES = ("RFC 3339 with an offset (Z or ±hh:mm); a leap second (:60) is refused, as Python's "
                   "datetime has none, and so is a time that is no time in UTC (0001-01-01T00:00+01:00, "
                   "9999-12-31T23:59-01:00: outside the years 1 to 9999 there), which no store keeps.")


def has_utc_time(value: datetime) -> datetime:
    """`value` as given, if it is a time in UTC too: a consumer's store (MongoDB keeps UTC) refuses one that is
    not, whatever the retry, and a consumer that handled part of its event first would be left half done."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("no time in UTC (outside the years 1 to 9999 there)") from None
    return value


# Every time of the contract: aware, and a time in UTC.
Instant = Annotated[AwareDatetime, AfterValidator(has_utc_time)]

# The notes publish adds to the description of every node of these formats, wherever the field's own
# description stands.
FORMAT_RULES = {"idn-email": EMAIL_RULES, "uri": HTTP_URL_RULES, "date-time": DATE_TIME_RULES}


class Payload(BaseModel):
    """Base of every event payload: immutable, unknown fields are refused, and so are NaN and Infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class RecordPosition(NamedTuple):
    """Where an event was read from Kafka. Not part of the event: a consumer's knowledge of it."""

    topic: str
    partition: int
    offset: int


POSITION = "position"
# The validation error of a schema_version that is not the type's (an earlier one is read through upcasters).
UNKNOWN_VERSION = "schema_version_unknown"


def position_of(event: BaseModel) -> RecordPosition | None:
    """`event.position` without the property's look-up (the read models' hot path)."""
    private = event.__pydantic_private__
    return private.get(POSITION) if private else None


class Event(BaseModel):
    """The envelope. Subclasses fix `type`, the owning `topic`, the `version` and the `payload` model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Base name of the topic that owns this event (see herald_shared.topics).
    topic: ClassVar[str]
    # Bumped whenever the payload changes incompatibly; the schema checks enforce it.
    version: ClassVar[int] = 1

    event_id: UUID = Field(default_factory=uuid4, description="Unique id; consumers deduplicate by it.")
    type: str = Field(description="The event's name, e.g. MessageBounced.")
    schema_version: int = Field(default=0, description="Version of this event type's schema.")
    occurred_at: AwareDatetime = Field(default_factory=utc_now, description="When it happened, in UTC.")
    account_id: AccountId = Field(description="The tenant; also the Kafka message key.")
    producer: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="Name of the service (or tool) that produced the event."
    )
    correlation_id: UUID | None = Field(default=None, description="Shared by all events of one flow.")
    causation_id: UUID | None = Field(default=None, description="event_id of the event that caused this one.")
    payload: Payload

    # Where an event was read from is kept in pydantic's store of private attributes, `__pydantic_private__`
    # (None until `read_at`), without declaring a `PrivateAttr`: a declared one makes pydantic wrap
    # `model_post_init` once per class level (Event, DeliveryEvent, MessageSent...), three calls on every
    # parse, a fifth of the time parsing an event takes. tests/unit/shared/test_event_position.py holds it
    # to pydantic's behaviour (serialisation, equality, copies).

    @property
    def position(self) -> RecordPosition | None:
        """The record this event was read from (set by the consumer), or None for an event made here."""
        return position_of(self)

    def read_at(self, position: RecordPosition) -> None:
        object.__setattr__(self, "__pydantic_private__", {POSITION: position})

    def __eq__(self, other: object) -> bool:
        """Events are equal by their fields; where one was read from is not part of what it says."""
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(self.event_id)

    @model_validator(mode="before")
    @classmethod
    def _default_schema_version(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            if data.get("schema_version") in (None, 0):
                data = {**data, "schema_version": cls.version}
            if info.context is None and "correlation_id" not in data and (flow := correlation.current()) is not None:
                # An event made during a request, or while an event is handled, belongs to that flow; one read
                # (`Contract.parse` passes a context) is as its producer wrote it.
                data = {**data, "correlation_id": flow}
        return data

    @field_validator("schema_version")
    @classmethod
    def _known_schema_version(cls, value: int) -> int:
        if value != cls.version:  # an earlier one is read through its upcasters (contract.Contract.parse)
            raise PydanticCustomError(UNKNOWN_VERSION, "unsupported schema_version {version} (this contract knows "
                                      "version {known})", {"version": value, "known": cls.version})
        return value

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00, 9999-12-31T23:59-01:00: no such time in UTC
            raise ValueError("out of the range of times in UTC") from None

    def caused(self) -> dict[str, Any]:
        """Envelope fields for an event caused by this one: same account and flow, causation set."""
        return {
            "account_id": self.account_id,
            "correlation_id": self.correlation_id or self.event_id,
            "causation_id": self.event_id,
        }


# Why a service refused an API key of a known account (herald_shared.http.api_key_account).
ApiKeyRefusal = Literal["revoked_key", "wrong_secret", "throttled_key", "throttled_ip"]


class ApiKeyRefusedPayload(Payload):
    """An API key of the account was presented to a service and refused (401, or 429 from the throttles): a failed
    attempt in the account's audit log. The payload of each service's own event of it (ApiKeyRefusedBySubscriptions,
    ApiKeyRefusedByCampaigns); billing folds them all into the one log."""

    key_id: Identifier = Field(description="The id of the key the request presented (`hk_<key id>.`); never its "
                                           "secret.")
    reason: ApiKeyRefusal = Field(
        description="revoked_key: the key is revoked; wrong_secret: the key id is the account's but the secret is "
                    "not its key's; throttled_key: refused unchecked, too many failed attempts on this key id; "
                    "throttled_ip: refused unchecked, too many failed attempts from this address. A service "
                    "records each checked failure (at most its throttle's limit per key id and window), and a key "
                    "id's unchecked refusals once per throttle window.")
    ip: str | None = personal_data("Where the request came from (audit log).", default=None)
    user_agent: ShortText | None = personal_data("The client's User-Agent (audit log).", default=None)
    path: ShortText = Field(description="The path the request asked for (without its query).")
