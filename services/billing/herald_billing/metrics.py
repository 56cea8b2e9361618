"""Billing's Prometheus metrics (the consumer's own come from herald_shared.kafka)."""

from __future__ import annotations

from prometheus_client import Counter

SIGN_UPS = Counter("herald_billing_sign_ups_total", "Accounts opened through sign-up.")
LOGINS = Counter("herald_billing_logins_total", "Password logins by result: success, or why they failed "
                 "(unknown_user, wrong_password, disabled_user, account_deleted, locked: refused by the throttle, "
                 "malformed: a request that was not valid, 422; wrong_reset_token: a password reset link tried "
                 "with a token not its own).", ["result"])
ENFORCED = Counter("herald_billing_plan_events_total", "Events the plan called for (TrialEnded, QuotaExhausted, "
                   "SendingBlocked...), counting repeats of the same decision.", ["type"])
PAYMENTS = Counter("herald_billing_payments_total", "Charges asked of the payment provider, by result (paid, "
                   "declined, unknown: no answer).", ["result"])
