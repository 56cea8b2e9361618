"""The members listing's `cursor`: a page may end at any member, and a subscriber id is any the event contract
allows (`Identifier`: a CRM chooses its own), so every `next_cursor` the API gives is one it takes back."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from herald_shared.contract.envelope import Identifier
from herald_shared.readmodel import compose
from herald_subscriptions.api import Cursor, decode_cursor, encode_cursor
from herald_subscriptions.domain import subscriber_id_for

CURSOR: TypeAdapter[str] = TypeAdapter(Cursor)
CRM_IDS = ["crm-42", "CRM:7.a_b", "x", "9" * 128, "a.b.c", "-", ".", "Z" + ":" * 127]


@pytest.mark.parametrize("subscriber_id", [*CRM_IDS, subscriber_id_for("acc1", "vip", "anna@example.com")])
@pytest.mark.parametrize("status", ["pending", "active", "unsubscribed", "suppressed"])
def test_every_next_cursor_is_a_cursor_the_next_page_takes(status: str, subscriber_id: str) -> None:
    TypeAdapter(Identifier).validate_python(subscriber_id)  # the contract allows it
    key = compose("acc1", "vip", status, subscriber_id)
    cursor = CURSOR.validate_python(encode_cursor(key))
    assert decode_cursor(cursor, "acc1", "vip") == key


@pytest.mark.parametrize("cursor", [
    "active." + "a" * 129,  # longer than any subscriber id
    "active.", "active", "gone.crm-42", "active.crm/42", "active.crm 42", "active.crm-42\n", "%%%",
    "active.caf\u00e9"])
def test_a_cursor_naming_no_possible_member_is_refused(cursor: str) -> None:
    with pytest.raises(ValidationError):
        CURSOR.validate_python(cursor)
