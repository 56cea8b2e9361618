"""The secret of a password-reset link: an HMAC-SHA256 of the request under a key only billing (which checks it)
and delivery (which mails it) hold, so the event announcing the request on Kafka carries no secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from pydantic import AfterValidator

KEY_MIN_LENGTH = 16
PAGE_PATH = "/reset-password"
_PURPOSE = b"herald.password-reset.v1"


def _checked_key(key: str) -> str:
    if key.strip() and len(key.strip()) < KEY_MIN_LENGTH:
        raise ValueError(f"HERALD_PASSWORD_RESET_KEY takes at least {KEY_MIN_LENGTH} characters")
    return key.strip()


# HERALD_PASSWORD_RESET_KEY as billing and delivery read it: empty (not configured), or at least 16 characters.
ResetKey = Annotated[str, AfterValidator(_checked_key)]


def reset_token(key: str, request_id: str, username: str, expires_at: datetime) -> str:
    """The link's token. The expiry is taken in whole seconds: both services compute it from the same instant,
    one from the event's JSON and one from MongoDB's milliseconds."""
    message = b"\n".join((_PURPOSE, request_id.encode(), username.encode(), str(int(expires_at.timestamp())).encode()))
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_matches(key: str, request_id: str, username: str, expires_at: datetime, token: str) -> bool:
    """Compared in constant time: a wrong guess learns nothing of how close it came."""
    expected = reset_token(key, request_id, username, expires_at)
    return hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace"))


@dataclass(frozen=True)
class ResetLinks:
    """How delivery builds a reset link: the key (None: not configured, no link is mailed) and billing's base URL
    as customers reach it."""

    key: str | None
    billing_url: str

    def link(self, request_id: str, username: str, expires_at: datetime) -> str | None:
        if self.key is None:
            return None
        token = reset_token(self.key, request_id, username, expires_at)
        return f"{self.billing_url}{PAGE_PATH}?{urlencode({'request': request_id, 'token': token})}"
