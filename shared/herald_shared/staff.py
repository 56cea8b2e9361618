"""Platform staff on the HTTP APIs: a staff token is its own credential, never a customer's API key.

`HERALD_STAFF_TOKENS` names each staff member with the scrypt hash of their token
(`name=scrypt$...,other=scrypt$...`, hashes from `herald_shared.apikeys.hash_secret`). A route takes
`StaffCredentials` and asks `StaffTokens.member` who is calling; every look at an account's data is then
written to an audit log by the service (PRODUCT.md, "Accounts, users, access").
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .apikeys import verify_secret
from .http import Unauthorised

STAFF_TOKEN = HTTPBearer(auto_error=False, scheme_name="StaffToken",
                         description="A staff token (HERALD_STAFF_TOKENS): `Authorization: Bearer ...`.")
StaffCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(STAFF_TOKEN)]
VERIFIED_REMEMBERED = 64


def parse_staff_tokens(setting: str) -> dict[str, str]:
    """`name=hash,...` → {name: hash}; entries without `=` are ignored."""
    pairs = (item.split("=", 1) for item in setting.split(",") if "=" in item)
    return {name.strip(): encoded.strip() for name, encoded in pairs if name.strip() and encoded.strip()}


class StaffTokens:
    """Who a bearer token belongs to. scrypt is slow on purpose, so it runs off the event loop, and a token
    verified once is remembered by its SHA-256 (never in clear) for the life of the process."""

    def __init__(self, hashes: dict[str, str]) -> None:
        self._hashes = hashes
        self._verified: OrderedDict[bytes, str] = OrderedDict()

    @classmethod
    def from_setting(cls, setting: str) -> StaffTokens:
        return cls(parse_staff_tokens(setting))

    async def member(self, credentials: HTTPAuthorizationCredentials | None) -> str:
        """The staff member's name, or Unauthorised (401)."""
        token = credentials.credentials if credentials is not None else ""
        if not token:
            raise Unauthorised("a staff token is required (Authorization: Bearer ...)")
        fingerprint = hashlib.sha256(token.encode()).digest()
        name = self._verified.get(fingerprint)
        if name is not None and name in self._hashes:
            self._verified.move_to_end(fingerprint)
            return name
        for name, encoded in self._hashes.items():
            if await asyncio.to_thread(verify_secret, token, encoded):
                self._verified[fingerprint] = name
                if len(self._verified) > VERIFIED_REMEMBERED:
                    self._verified.popitem(last=False)
                return name
        raise Unauthorised("a staff token is required (Authorization: Bearer ...)")



def staff_member(tokens: StaffTokens) -> Callable[[HTTPAuthorizationCredentials | None], Awaitable[str]]:
    """A route dependency naming the calling staff member (401 without a valid staff token):
    `Staff = Annotated[str, Depends(staff_member(tokens))]`."""

    async def member(credentials: StaffCredentials) -> str:
        return await tokens.member(credentials)

    return member
