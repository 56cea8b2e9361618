"""The hosted subscribe form speaks to a person: a refused post is told in plain words, never the API's
message (its address rules, its field names)."""

from __future__ import annotations

import pytest

from herald_subscriptions import domain
from herald_subscriptions.pages import FORM_REFUSED, form_refusal


def refusal_of(raw: str) -> domain.SubscriptionError:
    try:
        domain.normalise_email(raw)
    except domain.SubscriptionError as exc:
        return exc
    raise AssertionError(f"{raw!r} was taken")


@pytest.mark.parametrize("raw", ["not-an-address", "anna@example", "x@mail.test", "ann\u00e9@example.com", ""])
def test_an_address_the_form_cannot_take_is_told_in_a_persons_words(raw: str) -> None:
    refused = refusal_of(raw)
    assert "not a valid email address" in refused.detail  # the rule's own words, for developers
    assert form_refusal(refused) == "Please enter a valid email address, like name@example.com."


def test_every_refusal_reads_without_the_apis_details() -> None:
    assert form_refusal(domain.InvalidText("first_name contains a NUL character")) == (
        "Please check what you entered: one of the fields holds a character we cannot take.")
    assert form_refusal(domain.ListNotFound("no such list")) == "This subscription form does not exist any more."
    assert form_refusal(domain.InvalidCustomField("list 'news' has no custom field 'x'")) == FORM_REFUSED
