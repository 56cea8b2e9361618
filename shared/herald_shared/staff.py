"""Platform staff on the HTTP APIs: a staff token is its own credential, never a customer's API key.

`HERALD_STAFF_TOKENS` names each staff member with the scrypt hash of their token
(`name=scrypt$...,other=scrypt$...`, hashes from `herald_shared.apikeys.hash_secret`). A route takes
`StaffCredentials` and asks `StaffTokens.member` who is calling; every look at an account's data is then
written to an audit log by the service (PRODUCT.md, "Accounts, users, access"). A token refused (401, 429) is
a WARNING in the service's log, with the client's address and why (a staff token has no id to name; the token is
never logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .apikeys import verify_secret
from .http import TooManyAttempts, Unauthorised, client_host
from .throttle import API_KEY_ADDRESS_WINDOW, API_KEY_FAILURES_PER_ADDRESS, Refusal, Throttle

log = logging.getLogger(__name__)

STAFF_TOKEN = HTTPBearer(auto_error=False, scheme_name="StaffToken",
                         description="A staff token (HERALD_STAFF_TOKENS): `Authorization: Bearer ...`.")
StaffCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(STAFF_TOKEN)]


def parse_staff_tokens(setting: str) -> dict[str, str]:
    """`name=hash,...` → {name: hash}; entries without `=` are ignored."""
    pairs = (item.split("=", 1) for item in setting.split(",") if "=" in item)
    return {name.strip(): encoded.strip() for name, encoded in pairs if name.strip() and encoded.strip()}


class StaffTokens:
    """Who a bearer token belongs to. scrypt is slow on purpose, so it runs off the event loop, and a member's
    token verified once is remembered by its SHA-256 (never in clear) for the life of the process. A presented
    token is compared with every remembered one in constant time: nothing is looked up by the token itself."""

    def __init__(self, hashes: dict[str, str], attempts: Throttle | None = None) -> None:
        self._hashes = hashes
        self._verified: dict[str, bytes] = {}  # member -> SHA-256 of their token; one each, so bounded
        # Failed tokens per client address (each costs one scrypt per member): then 429, unchecked.
        self._attempts = attempts if attempts is not None else Throttle(API_KEY_FAILURES_PER_ADDRESS,
                                                                        API_KEY_ADDRESS_WINDOW)

    @classmethod
    def from_setting(cls, setting: str, attempts: Throttle | None = None) -> StaffTokens:
        return cls(parse_staff_tokens(setting), attempts)

    async def member(self, credentials: HTTPAuthorizationCredentials | None, address: str | None = None,
                     now: datetime | None = None) -> str:
        """The staff member's name; Unauthorised (401), or TooManyAttempts (429) while the client address has
        failed too often. A token this process already verified is accepted even then: guessing from a shared
        address does not lock the staff out."""
        token = credentials.credentials if credentials is not None else ""
        if not token:
            raise Unauthorised("a staff token is required (Authorization: Bearer ...)")
        fingerprint = hashlib.sha256(token.encode()).digest()
        remembered = self._remembered(fingerprint)
        if remembered is not None:
            return remembered
        now = now or datetime.now(UTC)
        if address is not None and (wait := self._attempts.retry_after(address, now)):
            refused_staff_token(address, "throttled_ip")
            raise TooManyAttempts(Refusal("throttled_ip", max(1, math.ceil(wait))))
        for name, encoded in self._hashes.items():
            if await asyncio.to_thread(verify_secret, token, encoded):
                self._verified[name] = fingerprint
                return name
        if address is not None:
            self._attempts.failed(address, now)
        refused_staff_token(address, "wrong_token")
        raise Unauthorised("a staff token is required (Authorization: Bearer ...)")

    def _remembered(self, fingerprint: bytes) -> str | None:
        found = None
        for name, known in self._verified.items():  # every one compared: the time tells nothing of a match
            if hmac.compare_digest(known, fingerprint) and found is None:
                found = name
        return found


def refused_staff_token(address: str | None, reason: str) -> None:
    """A WARNING in the service's log: from where, and why (wrong_token: no staff member's; throttled_ip: refused
    unchecked, the address failed too often). A request without a token is no attempt and is not logged."""
    log.warning("staff token refused", extra={"ip": address, "reason": reason})


def staff_member(tokens: StaffTokens) -> Callable[..., Awaitable[str]]:
    """A route dependency naming the calling staff member (401 without a valid staff token, 429 while the client
    address has failed too often): `Staff = Annotated[str, Depends(staff_member(tokens))]`."""

    async def member(request: Request, credentials: StaffCredentials) -> str:
        return await tokens.member(credentials, client_host(request))

    return member
