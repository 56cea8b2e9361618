"""The account notices' words (PRODUCT.md: "the customer is emailed"): what each says must hold for its reason."""

from __future__ import annotations

from herald_delivery.domain import AccountState
from herald_delivery.handlers import notice_text
from herald_shared.contract.billing import SendingBlocked


def blocked(reason: str) -> SendingBlocked:
    return SendingBlocked(account_id="acme", producer="billing",  # type: ignore[arg-type]
                          payload={"reason": reason, "detail": "the account was deleted"})


def test_a_deleted_account_is_told_nothing_more_goes_out_not_that_held_mail_goes_later() -> None:
    """Deletion is final: the generic "paused ... go out once this is resolved" would be untrue (review,
    2026-12-07: it was sent after a deletion)."""
    subject, body = notice_text(blocked("account_deleted"), AccountState("acme", company_name="Acme"))
    assert subject == "Herald: the account Acme is deleted"
    assert body is not None and "will not go out" in body and "go out once" not in body
    subject, body = notice_text(blocked("trial_ended"), AccountState("acme", company_name="Acme"))
    assert subject == "Herald: sending is paused for Acme" and body is not None and "go out once" in body
