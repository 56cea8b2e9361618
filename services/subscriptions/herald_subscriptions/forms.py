"""What guards the hosted pages' forms (SECURITY.md): a signed token in every form, posts from other sites
refused, a proof-of-work challenge a list can switch on, rate limits per client address and per email address,
and the response headers every page carries (a Content-Security-Policy that allows only what the pages use).

The rules that decide what a screened post gets are `domain.screen_form`; this module reads them off HTTP."""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from itsdangerous import BadSignature, Signer

from herald_shared.http import html_security_headers
from herald_shared.throttle import Throttle

from .domain import FORM_VALIDITY

FORM_SALT = "herald.form.v1"
CHALLENGE_SALT = "herald.challenge.v1"
# Proof of work: the browser finds a nonce such that SHA-256(challenge ":" nonce) starts with this many zero bits
# (2^16 hashes on average: about a second of a phone's JavaScript, nothing for one person, a cost per post for
# a bot that posts thousands).
CHALLENGE_BITS = 16
CHALLENGES_REMEMBERED = 100_000  # solved challenges kept to refuse their reuse, oldest forgotten first


class FormTokens:
    """The token in every hosted form: signed for the form's own path and the second it was served, so a post
    proves the form was fetched from here (and when: the subscribe form's minimum fill time) and cannot be
    replayed against another page. It carries no secret of the person: the pages it protects are public, or
    authorised by the signed link in their own path."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def _signer(self, action: str) -> Signer:
        return Signer(self._secret, salt=f"{FORM_SALT}:{action}")

    def issue(self, action: str, now: datetime | None = None) -> str:
        served = int((now or datetime.now(UTC)).timestamp() * 1000)  # milliseconds: the fill time is exact
        return self._signer(action).sign(str(served)).decode("ascii")

    def served_at(self, action: str, token: str) -> datetime | None:
        """When the form with this token was served, or None if the token is not one of ours for this path."""
        try:
            value = self._signer(action).unsign(token.encode("ascii", "replace"))
            return datetime.fromtimestamp(int(value) / 1000, UTC)
        except (BadSignature, ValueError, OverflowError, OSError):
            return None


def own_origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def cross_site(headers: Mapping[str, str], own_origins: Collection[str]) -> bool:
    """Whether a browser sent this post from another site's page (CSRF). Fetch Metadata first (every current
    browser sends `Sec-Fetch-Site`), then `Origin`, which browsers send with every cross-origin POST. A request
    with neither comes from no browser's cross-site form; what it may do is what the token and limits allow."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site.lower() not in ("same-origin", "none")
    origin = headers.get("origin")
    return origin is not None and origin.lower() not in own_origins


@dataclass(frozen=True)
class Limits:
    """Form posts allowed per client address and per email address in a sliding window, and the least time a
    person takes to fill the subscribe form."""

    posts_per_ip: int = 20
    posts_per_address: int = 5
    window: timedelta = timedelta(minutes=10)
    min_fill: timedelta = timedelta(seconds=3)


class Quota:
    """At most `limit` posts per key within `window` (`herald_shared.throttle.Throttle` counting every post).
    In one process: with several replicas, each allows its own share."""

    def __init__(self, limit: int, window: timedelta) -> None:
        self._posts = Throttle(limit, window)

    def take(self, key: str, now: datetime) -> float:
        """Seconds to wait before this key may post again (0: the post is counted and may go on)."""
        wait = self._posts.retry_after(key, now)
        if wait == 0:
            self._posts.failed(key, now)
        return wait


class ProofOfWork:
    """The challenge a list can switch on (`form_challenge: proof_of_work`): the form carries a signed random
    challenge, the page's script (served from here, allowed by the CSP) finds a nonce, the server checks one hash
    and that the challenge was not used before. It is the seam for a captcha provider: another class with
    `fields` and `passed`."""

    def __init__(self, secret: str, bits: int = CHALLENGE_BITS) -> None:
        self._signer = Signer(secret, salt=CHALLENGE_SALT)
        self.bits = bits
        self._used: OrderedDict[str, None] = OrderedDict()

    def fields(self, now: datetime | None = None) -> str:
        issued = int((now or datetime.now(UTC)).timestamp())
        challenge = self._signer.sign(f"{issued}-{secrets.token_urlsafe(12)}").decode("ascii")
        return (f'<input type="hidden" name="challenge" value="{challenge}" data-bits="{self.bits}">'
                '<input type="hidden" name="challenge_nonce" value="">')

    def passed(self, challenge: str, nonce: str, now: datetime | None = None) -> bool:
        """Solved, issued here within FORM_VALIDITY, and not used before (by its signed value: another spelling
        of the same signature is the same challenge)."""
        try:
            value = self._signer.unsign(challenge.encode("ascii", "replace")).decode()
            issued = datetime.fromtimestamp(int(value.split("-", 1)[0]), UTC)
        except (BadSignature, ValueError, OverflowError, OSError):
            return False
        if not timedelta(0) <= (now or datetime.now(UTC)) - issued <= FORM_VALIDITY:
            return False
        if value in self._used or len(nonce) > 32 or not solves(challenge, nonce, self.bits):
            return False
        self._used[value] = None
        if len(self._used) > CHALLENGES_REMEMBERED:
            self._used.popitem(last=False)
        return True


def solves(challenge: str, nonce: str, bits: int) -> bool:
    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    return int.from_bytes(digest, "big") >> (256 - bits) == 0


def solve(challenge: str, bits: int) -> str:
    """What the page's script does, in Python (tests, and a client that wants to post without a browser)."""
    nonce = 0
    while not solves(challenge, str(nonce), bits):
        nonce += 1
    return str(nonce)


# The page's script for the proof of work: it solves the challenge when the form is submitted.
CHALLENGE_SCRIPT = """(function () {
  var form = document.querySelector("form[data-challenge]");
  if (!form) return;
  var input = form.querySelector("input[name=challenge]"), out = form.querySelector("input[name=challenge_nonce]");
  var bits = parseInt(input.getAttribute("data-bits"), 10), solving = false;
  function zeros(buffer) {
    var bytes = new Uint8Array(buffer), n = 0;
    for (var i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0) { n += 8; continue; }
      return n + Math.clz32(bytes[i]) - 24;
    }
    return n;
  }
  form.addEventListener("submit", function (event) {
    if (out.value) return;
    event.preventDefault();
    if (solving) return;
    solving = true;
    var encoder = new TextEncoder(), nonce = 0;
    (function next() {
      crypto.subtle.digest("SHA-256", encoder.encode(input.value + ":" + nonce)).then(function (digest) {
        if (zeros(digest) >= bits) { out.value = String(nonce); form.submit(); return; }
        nonce += 1;
        next();
      });
    })();
  });
})();
"""

STYLE = ("body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}"
         "label{display:block;margin-top:1rem}input{font:inherit;padding:.4rem;width:100%;box-sizing:border-box}"
         "input[type=checkbox]{width:auto}button{font:inherit;margin-top:1.5rem;padding:.5rem 1.2rem}"
         "form.inline{display:inline}.hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}")


def page_headers(frame_ancestors: Sequence[str] = (), script: bool = False) -> dict[str, str]:
    """Every hosted page's headers: its stylesheet, its forms posting back here, the challenge script when the
    page has one, framing only by `frame_ancestors` (origins a list allows to embed its form); never cached."""
    return {**html_security_headers(STYLE, scripts=script, forms=True, frame_ancestors=frame_ancestors),
            "Cache-Control": "no-store"}
