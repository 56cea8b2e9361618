"""The payment provider seam: billing asks a provider to charge an invoice to the account's payment method and
records what it answered. `SimulatedProvider` is the one for development and tests; a real provider (a card
processor, SEPA direct debit) implements the same three methods, keyed by the invoice id so that a charge asked
for twice is taken once, and a charge can be looked up without charging (a card processor's search by the
metadata or idempotency key a charge was made with)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .domain import PaymentMethodInvalid


class PaymentProvider(Protocol):
    name: str

    def check(self, reference: str) -> None:
        """Raise PaymentMethodInvalid when the provider does not know this reference."""

    async def charge(self, reference: str, account_id: str, invoice_id: str, amount_cents: int) -> str | None:
        """Take `amount_cents` (EUR) for the invoice; None when paid, else why it was declined. Idempotent per
        invoice id: a charge repeated after a crash is not taken twice. `domain.ProviderUnavailable` (or any
        other exception) when the answer is not known (timeout, connection lost)."""

    async def find_charge(self, invoice_id: str) -> Charged | None:
        """What the provider did with a charge for this invoice, charging nothing: None when it never took
        one (never reached). Raises, as `charge`, when the provider does not answer."""


@dataclass(frozen=True)
class Charged:
    """A charge the provider answered: paid when `declined` is None."""

    declined: str | None


# The simulated provider's payment methods and what charging each does.
SIMULATED_METHODS: dict[str, str | None] = {
    "sim-card-ok": None,
    "sim-card-declined": "the card was declined",
    "sim-card-insufficient-funds": "insufficient funds",
    "sim-card-expired": "the card has expired",
}


class SimulatedProvider:
    """Charges succeed or fail by the method's name (SIMULATED_METHODS); every charge is remembered by
    invoice, as a real provider's idempotency key would."""

    name = "simulated"

    def __init__(self) -> None:
        self.charges: dict[str, tuple[str, int, str | None]] = {}  # invoice id -> (account, amount, declined)

    def check(self, reference: str) -> None:
        if reference not in SIMULATED_METHODS:
            raise PaymentMethodInvalid(f"the simulated provider knows {', '.join(SIMULATED_METHODS)}",
                                       [("body.reference", "unknown payment method")])

    async def charge(self, reference: str, account_id: str, invoice_id: str, amount_cents: int) -> str | None:
        earlier = self.charges.get(invoice_id)
        if earlier is not None and earlier[2] is None and earlier[:2] == (account_id, amount_cents):
            return None  # taken already (the same charge asked again, e.g. after its recording failed)
        declined = SIMULATED_METHODS.get(reference, "unknown payment method")
        self.charges[invoice_id] = (account_id, amount_cents, declined)
        return declined

    async def find_charge(self, invoice_id: str) -> Charged | None:
        earlier = self.charges.get(invoice_id)
        return None if earlier is None else Charged(earlier[2])
