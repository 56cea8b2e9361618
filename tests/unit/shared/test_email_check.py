"""The fast path of `checked_email` never disagrees with email-validator: every address it takes as plainly
valid is one email-validator accepts and leaves unchanged."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from herald_shared.contract.envelope import _plainly_valid, checked_email

# Characters around every boundary of the fast path: its own, others email-validator allows, and some it refuses.
LOCAL_CHARS = "aZ09_+-.!#$%&'*/=?^`{|}~\"(),:;<>[\\] é"
DOMAIN_CHARS = "az09-.AZ_é"


def slow(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


TLDS = st.one_of(st.text("azAZ09-", min_size=0, max_size=8),
                 st.sampled_from(["test", "local", "localhost", "arpa", "onion", "invalid", "com", "lv"]))


def address_of(local_chars: str, domain_chars: str, least: int, label_size: int) -> st.SearchStrategy[str]:
    return st.builds(lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
                     st.text(local_chars, min_size=least, max_size=70),
                     st.lists(st.text(domain_chars, min_size=least, max_size=label_size), min_size=least,
                              max_size=5), TLDS)


# Mostly near-plain addresses (where the fast path decides), and some of anything.
addresses = st.one_of(address_of("aZ09_+-.", "az09-", 1, 66), address_of("aZ09_+-.", "az09-", 1, 8),
                      address_of(LOCAL_CHARS, DOMAIN_CHARS, 0, 66))


@settings(max_examples=3000)
@given(addresses)
@example("a@b.c")
@example("x@localhost")
@example("x@foo.test")
@example("Anna.B+x@mail.example.lv")
@example("a@xn--80ak6aa92e.com")
@example("a@ab--cd.com")
@example(f"{'a' * 64}@example.com")
@example(f"{'a' * 65}@example.com")
@example(f"a@{'b' * 63}.com")
@example(f"a@{'b' * 64}.com")
@example(f"a@{'.'.join(['b' * 60] * 4)}.com")
@example(f"{'a' * 64}@{'.'.join(['b' * 58] * 3)}.co")
def test_the_fast_path_agrees_with_email_validator(address: str) -> None:
    expected = slow(address)
    if _plainly_valid(address):
        assert expected == address
    if expected is None:
        with pytest.raises(ValueError):
            checked_email(address)
    else:
        assert checked_email(address) == expected


@pytest.mark.parametrize("address", ["a..b@example.com", "a@example..com", "a@-example.com", "a@example",
                                     "a@example.123", "@example.com", "a@", "a b@example.com"])
def test_invalid_addresses_are_refused_either_way(address: str) -> None:
    assert not _plainly_valid(address)
    with pytest.raises(ValueError):
        checked_email(address)


def test_an_address_not_in_normal_form_is_normalised_by_email_validator() -> None:
    assert not _plainly_valid("anna@EXAMPLE.com")
    assert checked_email("anna@EXAMPLE.com") == "anna@example.com"
