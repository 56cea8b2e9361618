"""The schema compatibility check: removals, renames and narrowing are caught; additions are not."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from herald_shared.contract.compat import incompatibilities


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
