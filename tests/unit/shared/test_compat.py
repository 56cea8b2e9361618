"""The schema compatibility check: removals, renames and narrowing are caught; additions are not."""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from herald_shared.contract.compat import incompatibilities
from herald_shared.contract.envelope import EMAIL_PATTERN, HTTP_URL_PATTERN, MAX_REQUEST_BYTES


def schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


class V1(BaseModel):
    message_id: str
    smtp_code: int | None = None
    ratio: float = 0.0
    bounce_class: Literal["hard", "soft"]
    diagnostic: str = Field(max_length=1000)
    tags: list[str] = []


def test_identical_schemas_are_compatible() -> None:
    assert incompatibilities(schema(V1), schema(V1)) == []


def test_adding_an_optional_field_is_compatible() -> None:
    class V2(V1):
        reporting_mta: str | None = None

    assert incompatibilities(schema(V1), schema(V2)) == []


def test_widening_is_compatible() -> None:
    class Wider(BaseModel):
        message_id: str | int
        smtp_code: int | str | None = None
        ratio: float = 0.0
        bounce_class: Literal["hard", "soft", "unknown"]
        diagnostic: str = Field(max_length=5000)
        tags: list[str] = []

    assert incompatibilities(schema(V1), schema(Wider)) == []


def test_removing_a_field_is_incompatible() -> None:
    class Removed(BaseModel):
        message_id: str
        smtp_code: int | None = None
        ratio: float = 0.0
        bounce_class: Literal["hard", "soft"]
        tags: list[str] = []

    assert incompatibilities(schema(V1), schema(Removed)) == ["diagnostic: field removed or renamed"]


def test_renaming_a_field_is_incompatible() -> None:
    class Renamed(BaseModel):
        message_id: str
        smtp_code: int | None = None
        ratio: float = 0.0
        bounce_class: Literal["hard", "soft"]
        diagnostic_text: str = Field(max_length=1000)
        tags: list[str] = []

    assert "diagnostic: field removed or renamed" in incompatibilities(schema(V1), schema(Renamed))


def test_narrowing_types_is_incompatible() -> None:
    class Narrowed(BaseModel):
        message_id: int
        smtp_code: int
        ratio: int = 0
        bounce_class: Literal["hard"]
        diagnostic: str = Field(max_length=100)
        tags: list[int] = []

    problems = incompatibilities(schema(V1), schema(Narrowed))
    assert "message_id: type 'string' is no longer accepted (narrowed)" in problems
    assert "smtp_code: type 'null' is no longer accepted (narrowed)" in problems
    assert "ratio: type 'number' is no longer accepted (narrowed)" in problems
    assert "bounce_class: value 'soft' is no longer accepted" in problems
    assert "diagnostic: maxLength tightened to 100" in problems
    assert "tags[]: type 'string' is no longer accepted (narrowed)" in problems
    assert "smtp_code: field is now required" in problems


def test_a_new_required_field_is_incompatible() -> None:
    class MoreRequired(V1):
        reporting_mta: str

    assert incompatibilities(schema(V1), schema(MoreRequired)) == ["reporting_mta: field is now required"]


def test_nested_models_are_compared_through_refs() -> None:
    class Inner(BaseModel):
        code: str

    class Outer(BaseModel):
        inner: Inner

    class Inner2(BaseModel):
        code: int

    class Outer2(BaseModel):
        inner: Inner2

    assert incompatibilities(schema(Outer), schema(Outer2)) == [
        "inner.code: type 'string' is no longer accepted (narrowed)"]


# --- what the check let through before, some on the real contract's schemas -------------------------------------

def _real(type_name: str) -> dict[str, Any]:
    from herald_shared.contract import EVENT_TYPES
    from herald_shared.contract.publish import event_schema

    return event_schema(EVENT_TYPES[type_name])


def test_a_multiple_of_added_is_incompatible_and_one_that_divides_the_old_is_not() -> None:
    class Attempts(BaseModel):
        attempt: int = Field(default=1, ge=1)

    class EveryOther(BaseModel):
        attempt: int = Field(default=1, ge=1, multiple_of=2)

    class EveryFourth(BaseModel):
        attempt: int = Field(default=1, ge=1, multiple_of=4)

    class Cents(BaseModel):
        amount: float = Field(default=0, multiple_of=0.05)

    class Tenths(BaseModel):
        amount: float = Field(default=0, multiple_of=0.1)

    assert incompatibilities(schema(Attempts), schema(EveryOther)) == ["attempt: multipleOf tightened to 2"]
    assert incompatibilities(schema(EveryOther), schema(EveryFourth)) == ["attempt: multipleOf tightened to 4"]
    assert incompatibilities(schema(EveryFourth), schema(EveryOther)) == []
    assert incompatibilities(schema(EveryOther), schema(Attempts)) == []
    assert incompatibilities(schema(Tenths), schema(Cents)) == []  # 0.1 = 2 x 0.05, exactly
    assert incompatibilities(schema(Cents), schema(Tenths)) == ["amount: multipleOf tightened to 0.1"]


def test_unique_items_required_is_incompatible_and_dropped_is_not() -> None:
    class Tags(BaseModel):
        tags: list[str] = []

    class UniqueTags(BaseModel):
        tags: set[str] = set()

    assert incompatibilities(schema(Tags), schema(UniqueTags)) == ["tags: uniqueItems now required"]
    assert incompatibilities(schema(UniqueTags), schema(Tags)) == []


def test_map_keys_narrowed_are_incompatible_and_widened_are_not() -> None:
    published = _real("ImportCompleted")
    narrowed = copy.deepcopy(published)
    narrowed["$defs"]["ImportCompletedPayload"]["properties"]["rejected_by_reason"]["propertyNames"]["maxLength"] = 32
    assert incompatibilities(published, narrowed) == ["payload.rejected_by_reason{key}: maxLength tightened to 32"]
    assert incompatibilities(narrowed, published) == []


def test_a_changed_default_of_an_optional_field_is_incompatible() -> None:
    """An old CampaignCompleted without `failed` would be read as 10 failures."""
    published = _real("CampaignCompleted")
    changed = copy.deepcopy(published)
    changed["$defs"]["CampaignCompletedPayload"]["properties"]["failed"]["default"] = 10
    assert incompatibilities(published, changed) == [
        "payload.failed: default changed to 10 (an old event without the field would be read with it)"]

    class Flag(BaseModel):
        notify: bool = True

    class FlagOff(BaseModel):
        notify: bool = False

    class Count(BaseModel):
        notify: int = 1

    class Required(BaseModel):
        notify: bool

    assert incompatibilities(schema(Flag), schema(FlagOff)) == [
        "notify: default changed to False (an old event without the field would be read with it)"]
    assert "notify: default changed to 1 (an old event without the field would be read with it)" in \
        incompatibilities(schema(Flag), schema(Count))  # True == 1 in Python, not in JSON
    assert incompatibilities(schema(Required), schema(Flag)) == []  # every old event has it: a default is new


def test_a_keyword_the_check_does_not_compare_counts_as_a_narrowing() -> None:
    old = {"type": "array", "items": {"type": "string"}}
    new = {"type": "array", "items": {"type": "string"}, "contains": {"const": "x"}}
    assert incompatibilities(old, new) == [
        "(root): contains set to {'const': 'x'}, which this check does not compare (read as a narrowing)"]
    assert incompatibilities(new, new) == []
    assert incompatibilities(old, {**old, "description": "said", "x-personal-data": True}) == []


def test_digits_spelled_as_ecma_262_reads_them_are_the_same_pattern() -> None:
    r"""JSON Schema's patterns are ECMA-262's, where \d is [0-9]: the spelling changed, not what it takes."""
    old = {"type": "string", "pattern": r"^[245]\.\d{1,3}\.\d{1,3}$"}
    assert incompatibilities(old, {"type": "string", "pattern": r"^[245]\.[0-9]{1,3}\.[0-9]{1,3}$"}) == []
    assert incompatibilities({"type": "string", "pattern": r"^[\d.]+$"},
                             {"type": "string", "pattern": r"^[0-9.]+$"}) == []
    assert incompatibilities(old, {"type": "string", "pattern": r"^[245]\.[0-7]{1,3}\.[0-9]{1,3}$"}) == [
        r"(root): pattern changed to '^[245]\\.[0-7]{1,3}\\.[0-9]{1,3}$'"]
    assert incompatibilities({"type": "string", "pattern": r"^\\d$"}, {"type": "string", "pattern": r"^\\[0-9]$"})


def test_the_parsers_own_rule_published_as_a_pattern_is_compatible_on_its_format_only() -> None:
    """A `format: uri` field was always an AnyHttpUrl, an address field always refused quoted local parts, IP
    literals and special-use domains: saying so refuses no event any Herald parser took."""
    url = {"type": "string", "format": "uri", "minLength": 1}
    assert incompatibilities(url, {**url, "pattern": HTTP_URL_PATTERN}) == []
    email = {"type": "string", "format": "email"}
    assert incompatibilities(email, {"type": "string", "format": "idn-email", "pattern": EMAIL_PATTERN}) == []
    # the same pattern on another format, or another pattern, or one replacing a pattern: a narrowing
    assert incompatibilities({"type": "string"}, {"type": "string", "pattern": HTTP_URL_PATTERN}) == [
        f"(root): pattern changed to {HTTP_URL_PATTERN!r}"]
    assert incompatibilities(url, {**url, "pattern": "^https://"}) == ["(root): pattern changed to '^https://'"]
    assert incompatibilities({**url, "pattern": "^.+$"}, {**url, "pattern": HTTP_URL_PATTERN}) == [
        f"(root): pattern changed to {HTTP_URL_PATTERN!r}"]
    assert incompatibilities(email, {"type": "string", "format": "idn-email", "pattern": HTTP_URL_PATTERN})


def test_a_format_widened_is_compatible_and_one_narrowed_or_added_is_not() -> None:
    email, idn = {"type": "string", "format": "email"}, {"type": "string", "format": "idn-email"}
    assert incompatibilities(email, idn) == []
    assert incompatibilities(idn, email) == ["(root): format changed to 'email'"]
    assert incompatibilities({"type": "string"}, idn) == ["(root): format changed to 'idn-email'"]


def test_keys_constrained_by_a_pattern_are_compared_by_it() -> None:
    class Fields(BaseModel):
        values: dict[Annotated[str, Field(pattern=r"^[a-z]+$")], int] = {}

    class WiderValues(BaseModel):
        values: dict[Annotated[str, Field(pattern=r"^[a-z]+$")], int | str] = {}

    class NarrowerValues(BaseModel):
        values: dict[Annotated[str, Field(pattern=r"^[a-z]+$")], bool] = {}

    class OtherKeys(BaseModel):
        values: dict[Annotated[str, Field(pattern=r"^[a-z0-9]+$")], int] = {}

    assert incompatibilities(schema(Fields), schema(WiderValues)) == []
    assert incompatibilities(schema(Fields), schema(NarrowerValues)) == [
        "values{^[a-z]+$}: type 'integer' is no longer accepted (narrowed)"]
    assert incompatibilities(schema(Fields), schema(OtherKeys)) == [
        "values: keys matching '^[a-z0-9]+$' now constrained"]


def test_items_or_values_constrained_where_none_were_are_incompatible() -> None:
    assert incompatibilities({"type": "array"}, {"type": "array", "items": {"type": "string"}}) == [
        "[]: type 'any' is no longer accepted (narrowed)"]
    assert incompatibilities({"type": "object"}, {"type": "object", "additionalProperties": {"type": "string"}}) == [
        "{*}: type 'any' is no longer accepted (narrowed)"]
    assert incompatibilities({"type": "array", "items": {"type": "string"}}, {"type": "array"}) == []


def test_a_texts_length_bounded_by_what_one_record_holds_is_compatible_and_below_it_is_not() -> None:
    """No event with a text longer than MAX_REQUEST_BYTES characters was ever published (each character is a byte
    of the record at least), so such a bound refuses none; a lower one could refuse a published event."""
    body = {"type": "string", "maxLength": 2_000_000}
    assert incompatibilities(body, {**body, "maxLength": MAX_REQUEST_BYTES}) == []
    assert incompatibilities({"type": "string"}, {"type": "string", "maxLength": MAX_REQUEST_BYTES}) == []
    assert incompatibilities(body, {**body, "maxLength": 1_000_000}) == ["(root): maxLength tightened to 1000000"]
    assert incompatibilities(body, {**body, "maxLength": MAX_REQUEST_BYTES - 1})
    assert incompatibilities({"type": "array"}, {"type": "array", "maxItems": MAX_REQUEST_BYTES})  # texts only
