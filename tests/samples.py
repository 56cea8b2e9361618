"""One realistic example of every event type, for round-trip and schema tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.contract import EVENT_TYPES, Event

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
CONTENT = {"subject": "November news", "from_name": "Acme", "from_email": "news@acme.example",
           "text_body": "Hello {{first_name}}", "html_body": "<p>Hello {{first_name}}</p>"}
CONSENT = {"source": "form", "collected_at": T0.isoformat(), "method": "signup form on acme.example",
           "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"}
REF = {"message_id": "msg-c1-s1", "campaign_id": "c1", "subscriber_id": "s1", "list_id": "l1"}
CLIENT = {"ip": "198.51.100.7", "user_agent": "Mozilla/5.0 (iPhone)", "device": "mobile", "browser": "Safari",
          "country": "LV", "city": "Riga"}
HASH = hashlib.sha256(b"anna@example.com").hexdigest()  # SubscriberAdded's address, lower-cased
LATER = (T0 + timedelta(days=3)).isoformat()

PAYLOADS: dict[str, dict[str, Any]] = {
    "ListCreated": {"list_id": "l1", "name": "Newsletter", "opt_in": "double",
                    "custom_fields": [{"name": "city", "kind": "text"}]},
    "ListRenamed": {"list_id": "l1", "name": "Weekly news"},
    "ListFormConfigured": {"list_id": "l1", "frame_ancestors": ["https://www.example.com", "https://*.example.org"],
                           "challenge": "proof_of_work"},
    "ListDeleted": {"list_id": "l1", "members_at_deletion": 120},
    "SubscriberAdded": {"list_id": "l1", "subscriber_id": "s1", "email": "anna@example.com", "email_sha256": HASH,
                        "first_name": "Anna", "last_name": "Berzina", "custom_fields": {"city": "Riga"},
                        "opt_in": "double", "consent": CONSENT},
    "ConfirmationRequested": {"list_id": "l1", "subscriber_id": "s1", "email": "anna@example.com",
                              "greeting_name": "Anna", "list_name": "Newsletter", "company_name": "Acme",
                              "confirm_url": "https://herald.example/confirm/tok", "expires_at": LATER},
    "SubscriberConfirmed": {"list_id": "l1", "subscriber_id": "s1", "method": "double_opt_in", "ip": "203.0.113.9"},
    "SubscriberUnsubscribed": {"list_id": "l1", "subscriber_id": "s1", "source": "one_click", "campaign_id": "c1",
                               "message_id": "msg-c1-s1"},
    "SubscriberSuppressed": {"subscriber_id": "s1", "email_sha256": HASH, "reason": "hard_bounce",
                             "message_id": "msg-c1-s1", "campaign_id": "c1"},
    "SubscriberErased": {"subscriber_id": "s1", "email_sha256": HASH, "requested_by": "subscriber"},
    "RecipientOptedOutOfTests": {"email_sha256": HASH, "source": "one_click", "campaign_id": "c1",
                              "message_id": "2f1c7d1e-8a53-5b0e-9d3f-6c1b0a7e4d21"},
    "ListNotificationsConfigured": {"list_id": "l1", "subscribes": True, "unsubscribes": False},
    "MembershipNoticeRequested": {"list_id": "l1", "list_name": "Newsletter", "subscriber_id": "s1",
                                  "email": "anna@example.com", "change": "subscribed", "how": "double_opt_in"},
    "ApiKeyRefusedBySubscriptions": {"key_id": "0123abcd", "reason": "wrong_secret", "ip": "198.51.100.23",
                                     "user_agent": "crm-sync/3", "path": "/v1/lists"},
    "ImportCompleted": {"import_id": "imp1", "list_id": "l1", "rows_total": 10, "rows_imported": 8,
                        "rows_rejected": 2, "rejected_by_reason": {"missing_consent": 2},
                        "started_at": T0.isoformat()},
    "CampaignCreated": {"campaign_id": "c1", "name": "November", "list_id": "l1", "content": CONTENT},
    "CampaignEdited": {"campaign_id": "c1", "name": "November news", "list_id": "l1", "content": CONTENT},
    "CampaignDeleted": {"campaign_id": "c1"},
    "CampaignSubmitted": {"campaign_id": "c1", "submitted_by": "anna", "review_required": True},
    "CampaignApproved": {"campaign_id": "c1", "reviewer": "staff-1"},
    "CampaignRejected": {"campaign_id": "c1", "reviewer": "staff-1", "reasons": ["gambling offer"]},
    "CampaignQueued": {"campaign_id": "c1", "list_id": "l1", "segment": {"field_equals": {"city": "Riga"}},
                       "content": CONTENT, "review_required": False},
    "CampaignCancelled": {"campaign_id": "c1", "cancelled_by": "anna", "reason": "typo"},
    "StaffViewed": {"campaign_id": "c1", "staff": "maris", "action": "review_queue"},
    "ApiKeyRefusedByCampaigns": {"key_id": "0123abcd", "reason": "revoked_key", "ip": "198.51.100.23",
                                 "user_agent": "crm-sync/3", "path": "/v1/campaigns"},
    "CampaignTestRequested": {"campaign_id": "c1", "test_id": "t1", "recipients": ["anna@example.com"],
                              "content": {"subject": "Hi", "from_name": "Shop", "from_email": "news@shop.example",
                                          "text_body": "Hello {{ first_name }}"},
                              "sample": {"first_name": "Anna"}, "requested_by": "anna"},
    "CampaignCompleted": {"campaign_id": "c1", "recipients": 100, "sent": 97, "bounced": 3},
    "CampaignReturned": {"campaign_id": "c1", "reason": "sender_unverified",
                         "detail": "acme.example is not a verified sending domain of this account any more"},
    "CampaignUnscheduled": {"campaign_id": "c1", "unscheduled_by": "api", "reason": "wrong date"},
    "SendingDomainAdded": {"domain": "acme.example", "token": "k2n7q4x8r5t3w6y9z2b4c6d8f3"},
    "SendingDomainVerified": {"domain": "acme.example", "record": {
        "type": "TXT", "name": "_herald-verification.acme.example",
        "value": "herald-verification=k2n7q4x8r5t3w6y9z2b4c6d8f3"}},
    "SendingDomainRemoved": {"domain": "acme.example"},
    "SendingDomainDkimVerified": {"domain": "acme.example", "selector": "herald1", "public_key": "MIIBIjANBgkqhkiG9w0B",
                                  "record": {"type": "TXT", "name": "herald1._domainkey.acme.example",
                                             "value": "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0B"}},
    "DkimKeyCreated": {"domain": "acme.example", "selector": "herald1", "algorithm": "rsa-sha256",
                       "public_key": "MIIBIjANBgkqhkiG9w0B", "encrypted_private_key": "c2VhbGVkIHByaXZhdGUga2V5",
                       "encryption_key_id": "0123456789abcdef",
                       "sending_domain_added_id": "6f1c0e2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"},
    "MessageSent": {**REF, "recipient_domain": "example.com", "smtp_code": 250, "smtp_reply": "2.0.0 Ok"},
    "MessageDeferred": {**REF, "smtp_code": 451, "enhanced_status_code": "4.7.1", "diagnostic": "try later",
                        "attempt": 2, "next_attempt_at": LATER},
    "MessageBounced": {**REF, "bounce_class": "hard", "smtp_code": 550, "enhanced_status_code": "5.1.1",
                       "diagnostic": "user unknown", "source": "smtp_reply"},
    "ComplaintReceived": {**REF, "feedback_type": "abuse", "reporting_domain": "mail.example.net"},
    "MessageOpened": {**REF, "client": CLIENT},
    "LinkClicked": {**REF, "url": "https://acme.example/offer", "link_index": 0, "client": CLIENT},
    "UnsubscribeRequested": {**REF, "channel": "mailto"},
    "CampaignDeliveryFinished": {"campaign_id": "c1", "recipients": 100, "sent": 94, "bounced": 3, "skipped": 1,
                                 "failed": 0, "cancelled": 2},
    "DeliveryHeld": {"campaign_id": "c1", "gate": "account_suspended", "reason": "hard bounce rate 9%",
                     "messages_held": 40},
    "AccountWarned": {"metric": "abuse_rate", "value": 0.0012, "warning_level": 0.001, "threshold": 0.005,
                      "scope": {"kind": "rolling_window", "window": "24h"},
                      "counts": {"sent": 5000, "complaints": 6}},
    "AccountSuspended": {"metric": "hard_bounce_rate", "value": 0.09, "threshold": 0.08,
                         "scope": {"kind": "campaign", "campaign_id": "c1"},
                         "counts": {"sent": 1000, "hard_bounces": 90}, "reason": "hard bounce rate 9% >= 8%"},
    "AccountReinstated": {"reinstated_by": "staff-1", "reason": "list cleaned"},
    "ContentFlagged": {"campaign_id": "c1", "matches": [{"category": "gambling", "rule": "casino",
                                                          "excerpt": "best casino bonus"}]},
    "AccountOpened": {"company_name": "Acme", "registered_email": "owner@acme.example", "main_username": "anna",
                      "terms_accepted_at": T0.isoformat()},
    "AccountApproved": {"reviewer": "staff-1"},
    "AccountRejected": {"reviewer": "staff-1", "reasons": ["company could not be verified"]},
    "UserAdded": {"username": "anna", "role": "owner", "added_by": "anna",
                  "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"},
    "PasswordChanged": {"username": "anna",
                        "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$bmV3aGFzaG5ld2hhc2g"},
    "PasswordResetRequested": {"request_id": "pr0123456789abcdef0123456789abcdef", "username": "anna",
                               "expires_at": "2026-12-06T22:00:00Z"},
    "UserDisabled": {"username": "ben", "disabled_by": "anna"},
    "LoggedOut": {"username": "anna", "session_id": "s0123456789abcdef01234567"},
    "StaffAccessed": {"staff": "rita", "what": "account"},
    "PaymentMethodSet": {"provider": "simulated", "reference": "sim-card-ok"},
    "AccountDeleted": {"deleted_by": "anna"},
    "StaffViewedRates": {"staff": "rita"},
    "StaffViewedMessages": {"staff": "rita", "email_sha256": HASH},
    "AccountPurged": {"reason": "deleted", "since": "2026-08-01T09:00:00Z"},
    "CancellationRequested": {"channel": "self_service", "received_at": "2026-11-02T09:00:00Z",
                              "effective_at": "2026-12-01T09:00:00Z", "requested_by": "anna"},
    "CancellationWithdrawn": {"channel": "self_service", "received_at": "2026-11-20T09:00:00Z",
                              "cancel_at": "2026-12-01T09:00:00Z", "withdrawn_by": "anna"},
    "BillingDetailsChanged": {"legal_name": "Acme GmbH", "address": ["Hauptstraße 1", "10115 Berlin"],
                              "country": "DE", "vat_number": "DE123456789", "changed_by": "anna"},
    "ApiKeyIssued": {"key_id": "0123abcd", "key_hash": "scrypt$16384$8$1$c2FsdA$ZGlnZXN0ZGlnZXN0",
                     "label": "CRM", "issued_by": "anna"},
    "ApiKeyRevoked": {"key_id": "0123abcd", "revoked_by": "anna", "reason": "rotated"},
    "LoginSucceeded": {"username": "anna", "method": "password", "ip": "203.0.113.9"},
    "LoginFailed": {"username": "anna", "method": "password", "ip": "203.0.113.9", "reason": "wrong_password"},
    "PlanChanged": {"plan": "monthly", "tier_subscriber_limit": 100_000, "monthly_send_cap": 10_900_000,
                    "monthly_fee_cents": 19900, "billing_day": 31, "effective_at": T0.isoformat()},
    "TrialEnded": {"reason": "subscriber_limit_exceeded", "subscribers": 21, "emails_sent": 40},
    "QuotaExhausted": {"quota": "monthly_emails", "limit": 10_900_000, "used": 10_900_000},
    "CreditsPurchased": {"batch_id": "b1", "credits": 5000, "expires_at": LATER, "price_cents": 2500},
    "CreditsExpired": {"batch_id": "b1", "credits_expired": 120},
    "PaymentFailed": {"invoice_id": "inv1", "amount_cents": 19900, "reason": "card declined"},
    "PaymentSucceeded": {"invoice_id": "inv1", "amount_cents": 19900},
    "InvoiceVoided": {"invoice_id": "inv1", "reason": "payment_declined"},
    "InvoiceIssued": {"invoice_id": "inv1", "amount_cents": 19900, "period_start": T0.isoformat(),
                      "period_end": LATER, "due_at": LATER, "kind": "plan",
                      "lines": [{"description": "Monthly plan, 100,000 subscribers", "amount_cents": 19900}],
                      "purchase": {"tier_subscriber_limit": 100000, "edition": "standard",
                                   "monthly_send_cap": 10900000, "monthly_fee_cents": 19900, "billing_day": 2},
                      "seller": {"name": "Herald SIA", "address": ["Brīvības iela 1, Rīga, LV-1010"],
                                 "country": "LV", "vat_number": "LV40000000001"},
                      "customer": {"name": "Acme GmbH", "address": ["Hauptstraße 1", "10115 Berlin"],
                                   "country": "DE", "vat_number": "DE123456789"},
                      "vat_treatment": "reverse_charge", "vat_note": "Reverse charge"},
    "SendingBlocked": {"reason": "payment_failed", "detail": "invoice inv1"},
    "SendingUnblocked": {"reason": "payment_failed"},
    "SendAllowanceChanged": {"remaining": 60, "counts": ["campaign", "test"], "as_of": {"campaign": 38, "test": 2},
                             "sequence": 3},
}


def sample(type_name: str, account_id: str = "acc-1", **envelope: Any) -> Event:
    cls = EVENT_TYPES[type_name]
    return cls.model_validate({"type": type_name, "account_id": account_id, "producer": "tests",
                               "occurred_at": T0.isoformat(), "payload": PAYLOADS[type_name], **envelope})


def all_samples(account_id: str = "acc-1") -> list[Event]:
    return [sample(name, account_id) for name in EVENT_TYPES]


def campaign_queued(account_id: str, campaign_id: str, *, list_id: str = "news", review_required: bool = False,
                    html_body: str | None = None, text_body: str = 'Hello {{ first_name | default("friend") }}!',
                    segment: dict[str, Any] | None = None, from_email: str = "news@acme.example",
                    subject: str = "November news") -> Event:
    """A CampaignQueued as the campaigns service publishes it."""
    from herald_shared.contract.campaigns import CampaignQueued

    return CampaignQueued(account_id=account_id, producer="campaigns", payload={
        "campaign_id": campaign_id, "list_id": list_id, "segment": {"field_equals": segment or {}},
        "review_required": review_required,
        "content": {"subject": subject, "from_name": "Acme News", "from_email": from_email,
                    "html_body": html_body, "text_body": text_body}})


def confirmation_request(account_id: str, subscriber_id: str, email: str, *, list_id: str = "news",
                         greeting_name: str = "Ann") -> list[Event]:
    """A double opt-in subscription as the subscriptions service publishes it: the member added, then the
    confirmation asked for (what delivery turns into a confirmation email)."""
    from herald_shared.contract.subscriptions import ConfirmationRequested, SubscriberAdded

    return [
        SubscriberAdded(account_id=account_id, producer="subscriptions", payload={
            "list_id": list_id, "subscriber_id": subscriber_id, "email": email, "opt_in": "double",
            "email_sha256": hashlib.sha256(email.lower().encode()).hexdigest(),
            "consent": {"source": "form", "collected_at": "2026-11-01T00:00:00Z", "method": "form"}}),
        ConfirmationRequested(account_id=account_id, producer="subscriptions", payload={
            "list_id": list_id, "subscriber_id": subscriber_id, "email": email, "greeting_name": greeting_name,
            "list_name": "News", "company_name": "Acme Ltd", "confirm_url": "http://subs.test/confirm/tok",
            "expires_at": "2099-01-01T00:00:00Z"})]
