"""Rendering: a campaign compiled once into a template, then one RFC 5322 message per recipient as bytes.

Every message carries what PRODUCT.md requires whatever the customer wrote: an unsubscribe link in the
footer (not removable: the footer is added here, after the customer's content), `List-Unsubscribe` with
`List-Unsubscribe-Post` (RFC 8058, covered by the DKIM signature), and the "Email marketing by Herald"
identification unless the plan is PRO. Subject, preheader and bodies are templates of the shared renderer
(`herald_shared.templating`), compiled once per campaign; messages are assembled as bytes rather than built
as `EmailMessage` objects per recipient: rendering is the sender's main CPU cost.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import html
import itertools
import re
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr
from typing import Any, NamedTuple

from itsdangerous import BadSignature, URLSafeSerializer

from herald_shared.campaign_links import HTML_LINK, text_links, tracked_links
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.links import LinkSigner, TokenWriter
from herald_shared.templating import MAX_TOKENS, RenderError, Template, TemplateProblem, compile_template

from .customer_dkim import CustomerSigners
from .dkim_signing import DkimSigner, Signatures, sign, signatures
from .domain import Member, ascii_address, ascii_domain, signing_domain

IDENTIFICATION_FOOTER = "Email marketing by Herald"


def _important(*declarations: str) -> str:
    """Declarations with !important, on lines of at most 76 characters: a line of more than 998 would make the
    whole HTML part quoted-printable (`body_part`)."""
    lines = [""]
    for declaration in declarations:
        written = f"{declaration}!important;"
        if lines[-1] and len(lines[-1]) + len(written) > 76:
            lines.append("")
        lines[-1] += written
    return "\n".join(lines)


# The footer's style attributes (defence in depth: campaigns' screening refuses content that would hide the
# footer; this holds when it misses some). In the cascade an element's own style attribute with !important beats
# every style sheet rule, !important or not, in any @layer (CSS Cascade 5: element-attached declarations win
# before layers and specificity are compared; only user-agent and user !important, and running transitions,
# rank higher), and animations rank below any !important. So no <style> of the customer's changes these
# properties of the footer's <div> and <a>: they stay displayed, visible, opaque, clickable, in place, unshrunk,
# unclipped, unfiltered and in their colours. Not covered: what an element around the footer does to all it
# holds (display:none, opacity, transform, a clip or a filter on an element left open, or on <body>), a web font
# that draws blanks, and a ::before or ::after drawn over the link; screening refuses those.
_FOOTER_RESETS = (
    "visibility:visible", "opacity:1", "padding:0", "border:0", "outline:0", "background:none",
    "letter-spacing:normal", "word-spacing:normal", "line-height:normal", "font-size-adjust:none",
    "-webkit-text-security:none", "-webkit-text-stroke:0", "pointer-events:auto", "position:relative", "inset:auto",
    "z-index:2147483647", "transform:none", "translate:none", "scale:none", "rotate:none", "offset-path:none",
    "zoom:1", "clip:auto", "clip-path:none", "mask:none", "-webkit-mask:none", "filter:none", "mix-blend-mode:normal",
    "backface-visibility:visible", "content-visibility:visible", "content:normal", "mso-hide:none")
# What applies to a block (the <div>), not to an inline element (the <a>, displayed inline).
_BLOCK_RESETS = ("text-indent:0", "overflow:visible", "max-height:none", "max-width:none", "contain:none")
# The look is as before: 24px above, 12px #555 text, the link in the browsers' default link colour (#0000ee).
FOOTER_STYLE = _important("margin-top:24px", "margin-right:0", "margin-bottom:0", "margin-left:0", "display:block",
                          "font-size:12px", "color:#555",
                          "-webkit-text-fill-color:#555", *_FOOTER_RESETS, *_BLOCK_RESETS)
# Drawn above the <div> (z-index), the link needs no shadow: it would cover the line below it.
FOOTER_LINK_STYLE = _important("display:inline", "margin:0", "font-size:inherit", "color:#0000ee",
                               "-webkit-text-fill-color:#0000ee", "box-shadow:none", *_FOOTER_RESETS)
SIGNING_DOMAINS_REMEMBERED = 10_000  # sending domains whose signers (a parent's, the platform's) are kept
TRACKING_SALT = "herald.tracking.v1"
# Headers the DKIM signature covers, each over-signed (`dkim_signing.prepare`: one more than the message has, so
# none can be added, nor one it lacks, such as a Reply-To or a Cc); RFC 8058 section 3.2 requires
# List-Unsubscribe and -Post among them. The MIME headers too: a single-part message's Content-Transfer-Encoding
# changed would have a reader decode the signed body differently.
SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
                  b"content-type", b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post",
                  b"feedback-id", b"auto-submitted", b"x-herald-test")  # added or taken off, either fails
# The value a tracked link of the HTML body becomes (`{{ __link_0 }}`...): no custom field starts with "_".
LINK_FIELD = "__link_"
MAX_SUBJECT_CHARS = 2_000  # a rendered subject or preheader; bodies have the shared renderer's limit
TEST_SUBJECT_PREFIX = "[Test] "
MAX_7BIT_LINE = 998  # octets, without the CRLF (RFC 5321 4.5.3.1.6)
MAX_HEADER_LINE = 78  # characters, without the CRLF: what a header line SHOULD keep to (RFC 5322 2.1.1)
QP_LINE = 76  # the longest quoted-printable line, its soft line break's "=" included (RFC 2045 6.7)
QP_CACHED_CHARS = 256  # pieces this long are a campaign's own text (merged values are shorter and vary)
QP_CACHE_ENTRIES = 64  # encoded pieces a campaign keeps
CRLF = "\r\n"


class TemplateError(Exception):
    """Content that cannot be rendered into a valid message."""


# Signed tokens: the bounce address, tracking links


class MessageTokens:
    """Signs what ties an inbound mail or a tracking hit back to a message, so none can be forged."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("the link secret must be at least 16 characters")
        self._key = hashlib.sha256(b"herald.return-path.v1" + secret.encode()).digest()
        self._tracking = URLSafeSerializer(secret, salt=TRACKING_SALT)
        self._write_tracking = TokenWriter(secret, TRACKING_SALT, timed=False)
        self._last = ("", "")  # the last message id tagged, and its tag

    def address_tag(self, message_id: str) -> str:
        # A message asks for its tag three times in a row (return path, Message-ID, mailto unsubscribe).
        last_id, last_tag = self._last
        if message_id == last_id:
            return last_tag
        digest = hmac.new(self._key, message_id.encode(), hashlib.sha256).digest()
        tag = base64.b32encode(digest[:10]).decode().lower()
        self._last = (message_id, tag)
        return tag

    def signed_id(self, message_id: str) -> str:
        """`<message id>.<tag>`: names and authenticates the message (return paths and Message-IDs)."""
        return f"{message_id}.{self.address_tag(message_id)}"

    def message_from_signed_id(self, signed: str) -> str | None:
        """The message id in a signed id, or None if it is not one of ours or the tag is wrong."""
        message_id, _, tag = signed.rpartition(".")
        if not signed.isascii():  # ours are ASCII; a return path can carry anything, even undecodable bytes
            return None
        # Bytes: compare_digest refuses str with non-ASCII characters.
        if not message_id or not hmac.compare_digest(tag.lower().encode(), self.address_tag(message_id).encode()):
            return None
        return message_id

    def tagged_local_part(self, prefix: str, message_id: str) -> str:
        """`b+<signed id>`: a VERP local part (bounces) that names and authenticates the message."""
        return f"{prefix}+{self.signed_id(message_id)}"

    def message_from_local_part(self, local_part: str, prefix: str) -> str | None:
        """The message id in a tagged local part, or None if it is not one of ours or the tag is wrong."""
        head, _, rest = local_part.partition("+")
        return self.message_from_signed_id(rest) if head.lower() == prefix else None

    def tracking_token(self, claim: dict[str, Any]) -> str:
        return self._write_tracking.dumps(claim)

    def read_tracking(self, token: str) -> dict[str, Any] | None:
        try:
            data = self._tracking.loads(token)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key_pem: bytes


@dataclass(frozen=True)
class RenderSettings:
    tracking_base_url: str
    bounce_domain: str
    sender_id: str = "herald"  # the last field of Feedback-ID, naming the sending platform


@dataclass(frozen=True)
class Rendered:
    message_id: str
    mail_from: str  # the VERP return path
    recipient: str
    data: bytes
    # Only from a renderer that leaves signing to its caller (`Renderer(defer_signing=True)`): `data` is then
    # the message without its DKIM-Signature headers, which `signatures.headers()` makes (put them on top).
    signatures: Signatures | None = None


# C0 and C1 control characters and DEL: no header may carry one (RFC 5322 3.2.5: printable characters and spaces),
# though a subscriber's own name may hold one (an ESC or a BEL typed into a form).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _one_line(value: str) -> str:
    """Header values never carry a line break (header injection), nor any other control character."""
    return _CONTROLS.sub("", " ".join(value.split()))


def _folded(name: str, words: Sequence[str]) -> str | None:
    """The header `name: words...` (with its CRLF), a line break before the space between two words wherever the
    line would pass 78 characters (RFC 5322 2.2.3 folding; 2.1.1: lines SHOULD be at most 78 characters, MUST be
    at most 998); None when a word is too long for a line of 998."""
    lines = []
    line = f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > MAX_HEADER_LINE and len(line) > len(name) + 1:
            lines.append(line)
            line = ""
        line = f"{line} {word}"
        if len(line) > MAX_7BIT_LINE:
            return None
    lines.append(line)
    return CRLF.join(lines) + CRLF


MAX_ENCODED_WORD = 75  # characters (RFC 2047 2)
_Q_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")  # 5(3): in a phrase too
_Q_BYTE = [chr(byte) if byte in _Q_PLAIN else "_" if byte == 0x20 else f"={byte:02X}" for byte in range(256)]
_Q_LENGTH = [len(encoded) for encoded in _Q_BYTE]
_ZWJ = "\u200d"


def _shows_literally(value: str) -> bool:
    """ASCII without "=?": no reader can take any of it for an RFC 2047 encoded word."""
    return value.isascii() and "=?" not in value


def encoded_words(text: str, first: int = MAX_ENCODED_WORD) -> list[str]:
    """`text` as RFC 2047 encoded words in UTF-8 of at most 75 characters each (the first at most `first`),
    each holding whole characters, so each decodes alone (RFC 2047 2 and 5); Q or B, whichever is shorter for
    the whole text. Python's `Header.encode` made words of 76 and 77 characters (it leaves the folding space
    out of its line length)."""
    data = text.encode()
    q_length = list(itertools.accumulate(map(_Q_LENGTH.__getitem__, data), initial=0))  # of data[:i] in Q
    q = q_length[-1] <= 4 * -(-len(data) // 3)
    prefix = "=?utf-8?q?" if q else "=?utf-8?b?"
    words: list[str] = []
    room = min(first, MAX_ENCODED_WORD) - len(prefix) - 2
    start = 0
    while start < len(data):
        if q:
            end = bisect.bisect_right(q_length, q_length[start] + room) - 1
        else:
            end = start + room // 4 * 3
        if end < len(data):
            end = _word_end(data, start, end)
        piece = data[start:end]
        words.append(prefix + ("".join([_Q_BYTE[byte] for byte in piece]) if q else base64.b64encode(piece).decode())
                     + "?=")
        start = end
        room = MAX_ENCODED_WORD - len(prefix) - 2
    return words


def _word_end(data: bytes, start: int, end: int) -> int:
    """Where a word of `data[start:]` that may reach `end` ends: on a character boundary, and, where one is
    found after `start`, not inside a character with its combining marks, variation selectors, emoji
    modifiers and tags, a ZWJ sequence or a flag, so a reader that shows each word apart shows them whole."""
    while end > start and 0x80 <= data[end] < 0xC0:  # a UTF-8 continuation byte: inside a character
        end -= 1
    if end == start:  # no whole character fits (not reached with words of 75): at least one, for progress
        end += 1
        while end < len(data) and 0x80 <= data[end] < 0xC0:
            end += 1
        return end
    at = end
    while at > start and _joined(data, at):
        at -= 1
        while 0x80 <= data[at] < 0xC0:
            at -= 1
    return at if at > start else end


def _joined(data: bytes, at: int) -> bool:
    """Whether the characters before and after the boundary `at` belong to one grapheme (as far as the cases of
    `_word_end` go)."""
    after = data[at:at + 4].decode("utf-8", "ignore")[:1]
    before_start = at - 1
    while 0x80 <= data[before_start] < 0xC0:
        before_start -= 1
    before = data[before_start:at].decode()
    code = ord(after)
    if (unicodedata.category(after) in ("Mn", "Me", "Mc") or after == _ZWJ or before == _ZWJ
            or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F):
        return True
    if 0x1F1E6 <= code <= 0x1F1FF and 0x1F1E6 <= ord(before) <= 0x1F1FF:  # regional indicators pair up
        preceding = data[:at].decode("utf-8", "ignore")
        run = len(preceding) - len(preceding.rstrip("".join(map(chr, range(0x1F1E6, 0x1F200)))))
        return run % 2 == 1
    return False


def _text_header(name: str, value: str) -> str:
    """An unstructured header (a Subject) on one line, folded at its spaces when longer than 78 characters;
    in RFC 2047 encoded words, one a line, when it is not ASCII, holds "=?" (which readers would decode:
    `=?utf-8?q?=41?=` showing as "A") or a run without a space would make a line longer than 998 octets, which
    no folding can break."""
    value = _one_line(value)
    if _shows_literally(value):
        if len(name) + 2 + len(value) <= MAX_HEADER_LINE:
            return f"{name}: {value}{CRLF}"
        folded = _folded(name, value.split(" "))
        if folded is not None:
            return folded
    return f"{name}: {(CRLF + ' ').join(encoded_words(value, MAX_HEADER_LINE - len(name) - 2))}{CRLF}"


def _header_address(address: str, where: str) -> str:
    """A campaign's From or Reply-To as its head writes it: an international domain as its A-labels
    (`ascii_address`), since the head goes out without SMTPUTF8 (the envelope, Herald's return path and an
    ASCII recipient, never asks for it). A non-ASCII local part has no such form (RFC 6530): TemplateProblem,
    so the campaign is refused once (every message skipped `template_invalid` with this reason), not each
    message with an encoding error."""
    written = ascii_address(address)
    if not written.isascii():
        raise TemplateProblem(where, None, f"{address} cannot be written in a message without SMTPUTF8 (a local "
                                           "part that is not ASCII); use an ASCII address")
    return written


def _from_header(name: str, address: str) -> str:
    """The From header: the display name as a quoted string or in encoded words, folded like `_text_header`
    when the line passes 78 characters (a long name: 200 characters of UTF-8 make one encoded word of ~1,000)."""
    display = _one_line(name)
    formatted = formataddr((display, address), charset="utf-8")  # also refuses a non-ASCII address, as it did
    if _shows_literally(display):
        if len(formatted) <= MAX_HEADER_LINE - len("From: "):
            return f"From: {formatted}{CRLF}"
        # A space in formataddr's output is one between words (or in a quoted string): FWS.
        folded = _folded("From", formatted.split(" "))
        if folded is not None:
            return folded
    words = encoded_words(display, MAX_HEADER_LINE - len("From: "))
    return _folded("From", [*words, f"<{address}>"]) or f"From: {formatted}{CRLF}"


class BodyPart(NamedTuple):
    encoding: str  # its Content-Transfer-Encoding
    content: bytes  # as sent, with CRLF line ends
    # Known to hold no tab, no two spaces in a row and no space ending a line: DKIM's relaxed body
    # canonicalization leaves it as it is, so the signer need not scan it for them (~12 us for 11 KB). False
    # when not known (the signer then looks).
    relaxed: bool = False


class EncodedPiece(NamedTuple):
    """What a campaign keeps of a piece of its own text (`body_part`'s cache)."""

    encoded: bytes  # in quoted-printable, as `_qp_piece` writes it, with CRLF line ends
    relaxed: bool  # the encoding holds no tab and no two spaces in a row (see `BodyPart.relaxed`)
    # Non-ASCII, a NUL, or a line longer than 7bit allows: so is any text it is a piece of (joining pieces
    # only makes lines longer), which is then sent in quoted-printable without looking at the rest.
    never_7bit: bool


def body_part(text: str | Sequence[str], boundary: str = "",
              cache: dict[str, EncodedPiece] | None = None) -> BodyPart:
    """The encoding and content of a text, or of the concatenation of its pieces: `7bit` as written when the
    text is ASCII without NUL, its lines fit SMTP's 998 octets (RFC 2045 2.7) and it does not hold the
    multipart `boundary`; else quoted-printable, which cannot hold one ("=" is escaped). Both with CRLF line
    ends. Given pieces and a `cache`, each piece is encoded apart (`_qp_pieces`): the long ones, a campaign's
    own text, once per campaign. Encoding 5 KB as quoted-printable costs ~30 us, two parts a message."""
    pieces = [text] if isinstance(text, str) else text
    if cache is not None and len(pieces) > 1 and not any(piece.endswith("\r") for piece in pieces):
        long = {piece: _known_piece(piece, cache) for piece in pieces if len(piece) >= QP_CACHED_CHARS}
        if not any(known.never_7bit for known in long.values()):  # else the rest need not be looked at
            as_7bit = _as_7bit(_lf("".join(pieces)), boundary)
            if as_7bit is not None:
                return BodyPart("7bit", as_7bit)
        return BodyPart("quoted-printable", *_qp_pieces(pieces, long))
    normalised = _lf("".join(pieces))
    as_7bit = _as_7bit(normalised, boundary)
    if as_7bit is not None:
        return BodyPart("7bit", as_7bit)
    return BodyPart("quoted-printable", quoted_printable(normalised))  # no CR left: _lf passes it as it is


def _as_7bit(normalised: str, boundary: str) -> bytes | None:
    """The text (LF line ends) as a 7bit part, or None when it may not be one."""
    if (normalised.isascii() and "\0" not in normalised and (not boundary or boundary not in normalised)
            and max(map(len, normalised.split("\n"))) <= MAX_7BIT_LINE):
        return normalised.encode("ascii").replace(b"\n", b"\r\n")
    return None


def _qp_pieces(pieces: Sequence[str], long: Mapping[str, EncodedPiece]) -> tuple[bytes, bool]:
    """Quoted-printable of the pieces' concatenation, each piece encoded on its own and ended with a soft line
    break unless it ends a line: decoding gives the concatenation back. Pieces of QP_CACHED_CHARS or more are
    taken from `long` (`_known_piece`), the others encoded here. No piece may end with CR (it could be half of
    a CRLF). With it, whether the content is relaxed-canonical (`BodyPart.relaxed`): every encoded
    piece ends with a line end, and quoted-printable never leaves a space or tab before one (it writes =20,
    =09), so the content is when no piece holds a tab or two spaces in a row."""
    out: list[bytes] = []
    relaxed = True
    for piece in pieces:
        if not piece:
            continue
        if len(piece) >= QP_CACHED_CHARS:
            encoded, clean, _ = long[piece]
        else:
            encoded = _plain_piece(piece) or _qp_piece(piece).replace(b"\n", b"\r\n")
            clean = b"\t" not in encoded and b"  " not in encoded
        out.append(encoded)
        relaxed = relaxed and clean
    content = b"".join(out)
    if content.endswith(b"=\r\n"):
        content = content[:-3]  # no soft line break at the very end
    return content, relaxed


def _known_piece(piece: str, cache: dict[str, EncodedPiece]) -> EncodedPiece:
    """A long piece as the cache knows it: looked up, else worked out (and kept, up to QP_CACHE_ENTRIES)."""
    known = cache.get(piece)
    if known is None:
        encoded = _qp_piece(piece).replace(b"\n", b"\r\n")
        normalised = _lf(str(piece))
        known = EncodedPiece(encoded, b"\t" not in encoded and b"  " not in encoded,
                             not normalised.isascii() or "\0" in normalised
                             or max(map(len, normalised.split("\n"))) > MAX_7BIT_LINE)
        if len(cache) < QP_CACHE_ENTRIES:
            cache[piece] = known
    return known


def _plain_piece(piece: str) -> bytes | None:
    """A short piece that quoted-printable leaves as it is (printable ASCII without "=", not ending with a
    space, not a lone dot: a merged name, a link), encoded as `_qp_piece` would with CRLF, in ~0.2 us instead
    of ~1.2 us; else None."""
    if (len(piece) <= QP_LINE - 1 and piece.isascii() and piece.isprintable() and "=" not in piece
            and not piece.endswith(" ") and piece != "."):
        return piece.encode("ascii") + b"=\r\n"
    return None


def _qp_piece(piece: str) -> bytes:
    """One piece in quoted-printable with LF line ends, ending with a line end: its own, or a soft line break
    (its last line cut first when it leaves no room for the "=", never inside an "=XX" escape)."""
    normalised = _lf(str(piece))  # str(): an escaped value is Markup, whose replace() escapes its arguments
    encoded = _b2a_qp(normalised)
    if normalised.endswith("\n"):
        return encoded
    head, newline, last = encoded.rpartition(b"\n")
    if len(last) > QP_LINE - 1:
        cut = QP_LINE - 2 if last[QP_LINE - 2:QP_LINE - 1] == b"=" else \
            QP_LINE - 3 if last[QP_LINE - 3:QP_LINE - 2] == b"=" else QP_LINE - 1
        last = last[:cut] + b"=\n" + last[cut:]
    return head + newline + last + b"=\n"


def _lf(text: str) -> str:
    """The text with LF line ends (CRLF and lone CR made LF); as is when it has no CR, as most have."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def quoted_printable(text: str) -> bytes:
    """Quoted-printable with CRLF line ends, as the message is sent and signed. (A pure-Python fast path for
    ASCII text was tried: cutting long lines around escapes costs more per piece than binascii's whole line.)"""
    # b2a_qp writes its soft line breaks as "=\n" whatever the input's line ends: make all of them CRLF.
    return _b2a_qp(_lf(text)).replace(b"\n", b"\r\n")


def _b2a_qp(normalised: str) -> bytes:
    """binascii's quoted-printable (LF line ends), with its lines kept to QP_LINE: it counts a space or tab
    ending a line as one character, then writes it as "=20" or "=09", so such a line can reach 78. That escape
    then goes to a line of its own, after a soft line break. (Only a line's last space or tab is escaped.)"""
    encoded = binascii.b2a_qp(normalised.encode("utf-8"), istext=True)
    if b"=20" not in encoded and b"=09" not in encoded:
        return encoded
    lines = encoded.split(b"\n")
    for i, line in enumerate(lines):
        if len(line) > QP_LINE and line[-3:] in (b"=20", b"=09"):  # the rest is at most QP_LINE - 1 then
            lines[i] = line[:-3] + b"=\n" + line[-3:]
    return b"\n".join(lines)


# Where the footer goes: a place of the HTML where a browser's tokenizer (HTML Living Standard 13.2.5) reads
# markup, never inside a comment, a tag or its attribute, raw text (style, title, textarea...), a script or a
# template; the customer's content, and each member's values in it, cannot hide it there.

_WS = "\t\n\f\r "
_NAME_END = f"(?![^{_WS}/>])"  # a tag's name ends at white space, "/", ">" (or the end)
# A tag's attributes as the tokenizer reads them: a quote begins a value only right after "=" (elsewhere it is
# part of a name or of an unquoted value), and a value left open runs on to the next quote of its kind.
_VALUE = f"(?:\"[^\"]*+\"|'[^']*+'|[^{_WS}>\"'][^{_WS}>]*+|(?=>))"
_ATTRIBUTES = f"(?:[{_WS}/]++|[^{_WS}/>][^{_WS}/>=]*+(?:[{_WS}]*+=[{_WS}]*+{_VALUE}|(?![{_WS}]*+=)))*+"
_TAG = f"[a-zA-Z][^{_WS}/>]*+{_ATTRIBUTES}>"  # after "<" or "</", up to the ">" that ends it
_RAW_TEXT = "style|title|textarea|xmp|iframe|noembed|noframes"  # read as text up to their end tag
# Elements after which the reading depends on more than the tokenizer: handled one by one in `visible_points`.
_STOPS = "body|script|noscript|plaintext|template|frameset|svg|math|select"
_TEXT = "[^<]++|<(?![a-zA-Z!/?])"
_COMMENT = "<!--(?:-?>|(?:[^-]++|-(?!-!?>))*+--!?>)"  # "<!-->" and "<!--->" close at once; "--!>" closes too
_END_TAG = f"</(?!(?:body|html){_NAME_END}){_TAG}"
_HTML = re.ASCII | re.IGNORECASE  # tag names are ASCII: a "script" spelt with U+017F is no script
# The markup that leaves the tokenizer reading markup after it, whole: possessive, so one pass, no backtracking.
# (One alternative per raw-text element: a backreference would need a capturing group, which Python 3.11's
# possessive repeats mishandle: "SystemError: The span of capturing group is wrong".)
_RAW_TEXT_ELEMENTS = "|".join(f"<{name}{_NAME_END}{_ATTRIBUTES}>(?:[^<]++|<(?!/{name}{_NAME_END}))*+"
                              f"</{name}{_NAME_END}{_ATTRIBUTES}>" for name in _RAW_TEXT.split("|"))
_DATA = re.compile(
    f"(?:{_TEXT}|<(?!(?:{_RAW_TEXT}|{_STOPS}){_NAME_END}){_TAG}|{_END_TAG}|{_COMMENT}|{_RAW_TEXT_ELEMENTS}"
    f"|<(?:!(?!--)|\\?|/(?![a-zA-Z]))[^>]*+>)*+", _HTML)
# The same inside <svg>, <math> (foreign content) or <select>, where raw-text elements are not raw text (or are
# ignored) and "<![CDATA[" may open a section: only markup that reads alike either way.
_REGION = re.compile(
    f"(?:{_TEXT}|<(?!(?:{_RAW_TEXT}|script|noscript|plaintext|template|frameset){_NAME_END}){_TAG}|{_END_TAG}"
    f"|{_COMMENT}|<(?:!(?!--|\\[CDATA\\[)|\\?|/(?![a-zA-Z]))[^>]*+>)*+", _HTML)
_STOP = re.compile(f"</?[a-zA-Z][^{_WS}/>]*+", _HTML)  # (no group: see _RAW_TEXT_ELEMENTS)
_START_TAG = re.compile(f"<{_TAG}", _HTML)
_END_TAG_AT = re.compile(f"</{_TAG}", _HTML)
_BODY_START_AT = re.compile(f"<body{_NAME_END}", _HTML)
# Where the body ends: after </html> too, content is still the body's to a browser, but not to every reader.
_BODY_END_AT = re.compile(f"</(?:body|html){_NAME_END}", _HTML)
_SCRIPT_DATA = re.compile(f"</script(?=[{_WS}/>])|<!--", _HTML)
_SCRIPT_ESCAPED = re.compile(f"--+>|</?script[{_WS}/>]", _HTML)
_SCRIPT_DOUBLE_ESCAPED = re.compile(f"--+>|</script[{_WS}/>]", _HTML)
_DASHES_THEN_CLOSE = re.compile("-*>")
_PARTIAL_NAME = re.compile("</?[a-zA-Z]*")
_IN_QUOTED_VALUE = re.compile(
    f"</?[a-zA-Z][^{_WS}/>]*+{_ATTRIBUTES}[^{_WS}/>][^{_WS}/>=]*+[{_WS}]*+=[{_WS}]*+(?:\"[^\"]*+|'[^']*+)", _HTML)
_RAW_TEXT_START = re.compile(f"<(?:{_RAW_TEXT}){_NAME_END}{_ATTRIBUTES}>", _HTML)
_REGION_START = re.compile(f"<(?:svg|math|select){_NAME_END}", _HTML)
# Declarative shadow DOM: a <template shadowrootmode> (or the older `shadowroot`) makes its parent a shadow host,
# whose own children (the footer among them) are never shown without a <slot>. Delivery renames the attribute.
_TEMPLATE_START = re.compile(f"<template{_NAME_END}", _HTML)
_SHADOW_ROOT_ATTRIBUTES = ("shadowrootmode", "shadowroot")
_ATTRIBUTE_SEPARATORS = re.compile(f"[{_WS}/]*+")
_ATTRIBUTE_NAME = re.compile(f"[^{_WS}/>][^{_WS}/>=]*+")
_ATTRIBUTE_VALUE = re.compile(f"(?:[{_WS}]*+=[{_WS}]*+{_VALUE})?+")
# Where the text of a body may write a <template> start tag for some member: one written out, or a tag name
# that template code starts, ends or writes ("<{{ x }}", "<temp{% if a %}late{% endif %}", "< {%- if a %}": a
# "-" strips the white space before it, as str.rstrip does: Unicode's too, a no-break space or U+3000, hence no
# re.ASCII here). Merged values are escaped and never hold "<", so a body without either cannot.
_MAY_WRITE_TEMPLATE = re.compile(r"<template|<[a-z]*\s*\{[{%#]", re.IGNORECASE)


def visible_points(html: str, start: int = 0, end: int | None = None) -> tuple[int | None, int]:
    """Where in `html[start:end]` the preheader and the footer go, read as a browser reads HTML: (just after the
    first <body> start tag, None without one; the footer's place). The footer's place is the first </body> (or
    </html>) that is markup (not one in a comment, an attribute, raw text or a script), else the end; but when
    something that hides what follows runs to the end first (a comment, tag, attribute value, raw-text element
    or script left open, <plaintext>, <noscript>, <template>, <frameset>), just before it: there the reader
    reads markup, so the footer is markup. In <svg>, <math> and <select> the reading depends on the element open
    (a CDATA section, a <style> that is or is not raw text): when anything read differently follows, the
    footer goes before the element. Hidden by CSS (`display:none` on an element left open, a style sheet that
    matches the footer) it can still be: that is no matter of reading (README, "Rendering")."""
    end = len(html) if end is None else end
    body = None
    at = start
    while True:
        at = _read(_DATA, html, at, end)
        stop = _STOP.match(html, at, end)
        if stop is None or stop.group()[1] == "/":  # the end, </body>, or what runs to it (an open comment...)
            return body, at
        tag = _START_TAG.match(html, at, end)
        if tag is None:  # a start tag left open
            return body, at
        name = stop.group()[1:].lower()
        if name == "body":
            body = tag.end() if body is None else body
            at = tag.end()
        elif name == "script":
            close = _script_end(html, tag.end(), end)
            end_tag = None if close is None else _END_TAG_AT.match(html, close, end)
            if end_tag is None:
                return body, at
            at = end_tag.end()
        elif name in ("svg", "math", "select"):
            region = _read(_REGION, html, at, end)
            return body, region if region == end or _BODY_END_AT.match(html, region, end) else at
        else:  # <plaintext> is never closed; <noscript> is raw text or markup by the reader; <template> is inert
            return body, at


def shadow_root_attributes(html: str) -> list[int]:
    """Where each `shadowrootmode` or `shadowroot` attribute of a `<template>` start tag in `html` begins, its
    attributes read as the tokenizer reads them (names end at white space, "/", ">" or "="; ASCII case does not
    matter; a quote begins a value only after "="). Every "<template" is looked at, also one a browser would
    read as text (in a comment, an attribute value): renaming an attribute there changes no reading."""
    found = []
    for tag in _TEMPLATE_START.finditer(html):
        at = tag.end()
        while (name := _ATTRIBUTE_NAME.match(html, _read(_ATTRIBUTE_SEPARATORS, html, at, len(html)))) is not None:
            if name.group().lower() in _SHADOW_ROOT_ATTRIBUTES:
                found.append(name.start())
            at = _read(_ATTRIBUTE_VALUE, html, name.end(), len(html))
    return found


def _read(pattern: re.Pattern[str], html: str, at: int, end: int) -> int:
    """Where `pattern` (one that always matches, maybe nothing) stops reading from `at`."""
    found = pattern.match(html, at, end)
    return at if found is None else found.end()


def _script_end(html: str, at: int, end: int) -> int | None:
    """Where the script whose text starts at `at` ends (its </script>), or None when it runs to `end`: its text
    has escape states ("<!--", then "<script>", in which a </script> does not end it) that other raw text lacks."""
    state = "data"
    while True:
        if state == "data":
            found = _SCRIPT_DATA.search(html, at, end)
            if found is None:
                return None
            if found.group().startswith("</"):
                return found.start()
            at, state = found.end(), "escaped"
            dashes = _DASHES_THEN_CLOSE.match(html, at, end)  # "<!-->", "<!--->": back at once
            if dashes is not None:
                at, state = dashes.end(), "data"
        elif state == "escaped":
            found = _SCRIPT_ESCAPED.search(html, at, end)
            if found is None:
                return None
            if found.group().startswith("</"):
                return found.start()
            at, state = found.end(), "data" if found.group().startswith("-") else "double escaped"
        else:
            found = _SCRIPT_DOUBLE_ESCAPED.search(html, at, end)
            if found is None:
                return None
            at, state = found.end(), "data" if found.group().startswith("-") else "escaped"


class HtmlPlan(NamedTuple):
    """Where a campaign's preheader and footer go whatever its members' values: which `<body` of a message
    (counted from 0) is the body's start tag, which `</body` or `</html` is where the footer goes (None: the
    end). Found once per campaign, so a message is searched for those two tags alone."""

    body_start: int | None
    body_end: int | None


class _EmptyValues(Mapping[str, object]):
    """Every field, empty: a template of text and merge tags then writes each of its values as a piece."""

    def __getitem__(self, key: str) -> object:
        return ""

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def html_plan(template: Template) -> HtmlPlan | None:
    """The campaign's `HtmlPlan`, or None when each message is read whole (`visible_points`): a template with
    logic (what it writes depends on the member), or one with a merge tag where a value could change the
    reading (in a tag's name, an unquoted attribute, a script...). A value is escaped, so it holds no "<", ">"
    or quote: in text, a quoted attribute value, raw text or a comment it changes nothing, unless the text
    around it could make a tag name or a comment's end of it ("</bo{{ x }}", "<!-- {{ x }}>")."""
    try:
        pieces = template.render_segments(_EmptyValues())
    except RenderError:
        return None
    if len(pieces) == 1 and template.static_text is None:
        return None
    skeleton = "".join(pieces)
    body, footer = visible_points(skeleton)
    if footer < len(skeleton) and not _BODY_END_AT.match(skeleton, footer):
        return None  # before something left open: the number of "<" before it varies with values
    if _REGION_START.search(skeleton, 0, footer):
        return None  # <svg>, <math>, <select>: read from the element's start for each value, so not planned
    at = resume = 0
    for index in range(0, len(pieces) - 1, 2):  # the template's own text, then a value, in turn
        at += len(pieces[index])
        if at > footer + len("</body"):
            break
        resume = _inert(skeleton, resume, at, pieces[index + 2] if index + 2 < len(pieces) else "")
        if resume < 0:
            return None
        at += len(pieces[index + 1])
    # The body's start tag is the last "<body" before its end.
    return HtmlPlan(None if body is None else len(_BODY_START_AT.findall(skeleton, 0, body)) - 1,
                    None if footer == len(skeleton) else len(_BODY_END_AT.findall(skeleton, 0, footer)))


def _inert(skeleton: str, resume: int, at: int, after: str) -> int:
    """Whether any escaped value written at `at` of the template's text leaves its reading as it is: -1 if not,
    else where the next value's reading may resume (a place read as markup, at or before `at`: the analysis
    of a template with thousands of merge tags stays linear)."""
    opening = skeleton.rfind("<", max(at - 10, 0), at)  # no name that matters is longer than "noframes"
    if opening >= 0 and _PARTIAL_NAME.fullmatch(skeleton, opening, at):
        return -1  # "<", "</", "</bo": the value could end or make a tag name
    _, stop = visible_points(skeleton, resume, at)
    if stop == at:  # between two pieces of markup
        return at
    if (_IN_QUOTED_VALUE.fullmatch(skeleton, stop, at) or _RAW_TEXT_START.match(skeleton, stop, at)
            # In a comment, a value ending with "--" would close it before a ">" that follows.
            or (skeleton.startswith("<!--", stop) and after[:1] not in ("-", "!", ">"))):
        return stop
    return -1


def _html_points(html: str, plan: HtmlPlan | None) -> tuple[int | None, int]:
    """`visible_points` of a message, by its campaign's plan when it has one."""
    if plan is None:
        return visible_points(html)
    footer = len(html) if plan.body_end is None else _nth(_BODY_END_AT, html, plan.body_end)
    body = None
    if plan.body_start is not None:
        tag_at = _nth(_BODY_START_AT, html, plan.body_start)
        tag = None if tag_at is None else _START_TAG.match(html, tag_at)
        body = None if tag is None else tag.end()
        if body is None:
            return visible_points(html)  # cannot be (the plan holds for any values); read whole if it were
    return (body, footer) if footer is not None else visible_points(html)


def _nth(pattern: re.Pattern[str], text: str, n: int) -> int | None:
    if n == 0:
        found = pattern.search(text)
        return None if found is None else found.start()
    for index, match in enumerate(pattern.finditer(text)):
        if index == n:
            return match.start()
    return None


@dataclass(frozen=True)
class CampaignTemplate:
    """A campaign's content, compiled once; `Renderer.campaign_message` makes one recipient's message."""

    account_id: str
    campaign_id: str
    headers: str  # the headers that are the same for every recipient
    subject: Template
    subject_header: str | None  # the Subject header, when the subject is not personalised
    preheader: Template | None
    text: Template  # its links that are tracked links of the HTML (`text_links`) are those values too
    html: Template | None  # tracked links are the values LINK_FIELD0, LINK_FIELD1...
    links: list[str]
    footer: bool
    feedback_id: str
    sender_domain: str
    html_plan: HtmlPlan | None = None  # where its preheader and footer go; None: found in each message
    # Its HTML may hold a <template> start tag (`_MAY_WRITE_TEMPLATE`): each message is searched for
    # shadow-root attributes to rename (`shadow_root_attributes`).
    templates: bool = False
    # Its own text, encoded once (quoted-printable pieces, `body_part`); filled as its messages are rendered.
    encoded: dict[str, EncodedPiece] = field(default_factory=dict, compare=False, repr=False)


def compile_campaign(account_id: str, campaign_id: str, content: CampaignContent, *, footer: bool,
                     settings: RenderSettings) -> CampaignTemplate:
    """The campaign's subject, preheader and bodies compiled with the shared renderer; TemplateProblem when
    one of them does not compile (campaigns checked them, so this is stored content gone bad)."""
    links = tracked_links(content.html_body)
    html_template = None
    if content.html_body is not None:
        counter = iter(range(len(links)))
        # Each tracked link becomes a value the renderer fills with that recipient's tracking URL.
        linked = HTML_LINK.sub(lambda m: f"{m.group(1)}{m.group(2)}{{{{ {LINK_FIELD}{next(counter)} }}}}{m.group(2)}",
                               content.html_body)
        # Campaigns checked the body without them: each adds {{, a name, }} and a split of the text around it.
        html_template = compile_template(linked, html=True, where="html_body",
                                         max_tokens=MAX_TOKENS + 4 * len(links))
    text_body, text_links_count = _linked_text(content.text_body, links)
    text_template = compile_template(text_body, where="text_body", max_tokens=MAX_TOKENS + 4 * text_links_count)
    subject = compile_template(content.subject, where="subject", max_output_chars=MAX_SUBJECT_CHARS)
    preheader = None
    if content.preheader and html_template is not None:
        preheader = compile_template(content.preheader, where="preheader", max_output_chars=MAX_SUBJECT_CHARS)
    from_email = _header_address(str(content.from_email), "from_email")
    headers = [_from_header(content.from_name, from_email).removesuffix(CRLF), "MIME-Version: 1.0"]
    if content.reply_to:
        headers.append(f"Reply-To: {_header_address(str(content.reply_to), 'reply_to')}")
    # Gmail's Feedback-ID: campaign:customer:kind:sender, so complaint rates can be told apart per campaign.
    feedback_id = f"{campaign_id}:{account_id}:campaign:{settings.sender_id}"
    static_subject = subject.static_text
    return CampaignTemplate(account_id=account_id, campaign_id=campaign_id, headers=CRLF.join(headers) + CRLF,
                            subject=subject, preheader=preheader,
                            subject_header=None if static_subject is None else _subject_header(static_subject),
                            text=text_template, html=html_template,
                            links=links, footer=footer, feedback_id=_one_line(feedback_id),
                            sender_domain=from_email.rpartition("@")[2].lower(),
                            html_plan=None if html_template is None else html_plan(html_template),
                            templates=content.html_body is not None
                            and _MAY_WRITE_TEMPLATE.search(content.html_body) is not None)


def _linked_text(text_body: str, links: list[str]) -> tuple[str, int]:
    """The text part with each of the HTML's tracked links written in it (`<URL>`, as campaigns derives the text
    part: `campaign_links.text_links`) made the value of that link, as in the HTML, so a click from either part
    counts for the link; and how many there are."""
    pieces, at = [], 0
    found = text_links(text_body, links) if links else []
    for start, end, index in found:
        pieces += [text_body[at:start], f"{{{{ {LINK_FIELD}{index} }}}}"]
        at = end
    return "".join(pieces) + text_body[at:], len(found)


def merge_values(member: Member) -> dict[str, object]:
    """A member's merge values: custom fields as stored (numbers stay numbers, for comparisons), the names and
    the address; absent values are "" (so `default` applies)."""
    values: dict[str, object] = {name: "" if value is None else value for name, value in member.custom_fields.items()}
    values.update(first_name=member.first_name or "", last_name=member.last_name or "", email=member.email or "")
    return values


def _subject_header(subject: str) -> str:
    return _text_header("Subject", subject)


def _preheader_html(text: str) -> str:
    """The preview line inboxes show after the subject, hidden in the message itself."""
    return (f'<div style="display:none;max-height:0;overflow:hidden;mso-hide:all" aria-hidden="true">'
            f"{html.escape(_one_line(text))}</div>")


class Renderer:
    def __init__(self, settings: RenderSettings, tokens: MessageTokens, links: LinkSigner,
                 dkim_keys: Mapping[str, Sequence[DkimKey]], default_dkim: Sequence[DkimKey] = (), *,
                 defer_signing: bool = False, customer_signers: CustomerSigners | None = None) -> None:
        """`dkim_keys`: per sending domain, the keys that sign its mail (one signature each: Ed25519 and RSA
        side by side is dual signing); `default_dkim`: those of the platform's domain, for other domains.
        `customer_signers`: the accounts' own keys of their sending domains (`customer_dkim`), asked for a domain
        without the operator's keys, before the default.
        `defer_signing`: messages with an RSA signature to make come back prepared for signing but unsigned
        (`Rendered.signatures`), for a caller that signs them on another thread."""
        self._defer_signing = defer_signing
        self.settings = settings
        self.tokens = tokens
        self.links = links
        # By the domain's A-labels: the From domain is looked up in that form, and d= is written in it.
        self._signers: dict[str, list[DkimSigner]] = {}
        for domain, keys in dkim_keys.items():
            if not keys:
                continue
            self._signers.setdefault(ascii_domain(domain), []).extend(
                DkimSigner.from_pem(ascii_domain(k.domain), k.selector, k.private_key_pem) for k in keys)
        self._default_signers = [DkimSigner.from_pem(ascii_domain(k.domain), k.selector, k.private_key_pem)
                                 for k in default_dkim]
        # Sending domains without keys of their own: the operator's keys of their parent ([] when none).
        self._signers_of: dict[str, list[DkimSigner]] = {}
        self.customer_signers = customer_signers
        self._base = settings.tracking_base_url.rstrip("/")
        self._date = (-1, "")  # the last second a Date header was written for, and the header's value

    @property
    def dkim_signers(self) -> Mapping[str, Sequence[DkimSigner]]:
        """The signers of each domain with keys (A-labels); its subdomains are signed with them too."""
        return self._signers

    @property
    def default_signers(self) -> Sequence[DkimSigner]:
        """The signers of mail from any other domain (the platform's)."""
        return self._default_signers

    def date(self, now: datetime | None = None) -> str:
        """The Date header's value (RFC 5322, whole seconds): `now`, else the current second, formatted once a
        second (email.utils.format_datetime costs ~10 us, a message needs one)."""
        if now is not None:
            return format_datetime(now)
        second = int(time.time())
        if second != self._date[0]:
            self._date = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
        return self._date[1]

    def return_path(self, message_id: str) -> str:
        return f"{self.tokens.tagged_local_part('b', message_id)}@{self.settings.bounce_domain}"

    def message_id_header(self, message_id: str) -> str:
        """Signed like the return path, so a report quoting only the original's Message-ID is tied to it."""
        return f"<{self.tokens.signed_id(message_id)}@{self.settings.bounce_domain}>"

    def unsubscribe_mailto(self, message_id: str) -> str:
        return f"{self.tokens.tagged_local_part('u', message_id)}@{self.settings.bounce_domain}"

    def campaign_message(self, template: CampaignTemplate, member: Member, message_id: str,
                         now: datetime | None = None) -> Rendered:
        """One subscriber's message. TemplateError when the member has no address; RenderError when their
        values make a render fail or exceed its limits."""
        if not member.email:
            raise TemplateError("the member has no address (erased?)")
        return self._campaign(template, member.email, merge_values(member), message_id, member.subscriber_id,
                              test=False, now=now)

    def test_message(self, template: CampaignTemplate, recipient: str, sample: Mapping[str, object],
                     message_id: str, test_id: str, now: datetime | None = None) -> Rendered:
        """A test send of the campaign: rendered with the sample values, `[Test] ` before the subject and
        `X-Herald-Test: yes`. Its links are left as written and it has no open pixel (a test's engagement is
        nobody's statistic); its unsubscribe link names no subscriber and is marked a test's, so it unsubscribes
        no one, and names the recipient by hash: using it stops the account's tests to that address."""
        values: dict[str, object] = {name: "" if value is None else value for name, value in sample.items()}
        return self._campaign(template, recipient, values, message_id, f"test:{test_id}", test=True, now=now,
                              recipient_sha256=hashlib.sha256(recipient.lower().encode()).hexdigest())

    def _campaign(self, template: CampaignTemplate, recipient: str, values: dict[str, object], message_id: str,
                  subscriber_id: str, *, test: bool, now: datetime | None,
                  recipient_sha256: str | None = None) -> Rendered:
        claim = {"a": template.account_id, "m": message_id, "c": template.campaign_id, "s": subscriber_id}
        unsubscribe = self.links.unsubscribe_url(template.account_id, subscriber_id, template.campaign_id,
                                                 message_id, test=test, recipient_sha256=recipient_sha256)
        values["unsubscribe_url"] = unsubscribe
        for index, url in enumerate(template.links):
            values[f"{LINK_FIELD}{index}"] = url if test else (
                f"{self._base}/t/c/{self.tokens.tracking_token({**claim, 'i': index})}")
        text = template.text.render_segments(values)
        text.append(f"{CRLF}{CRLF}-- {CRLF}Unsubscribe with one click: {unsubscribe}{CRLF}"
                    + (IDENTIFICATION_FOOTER + CRLF if template.footer else ""))
        html_body = None
        if template.html is not None:
            html_body = template.html.render_segments(values)
            whole = "".join(html_body)
            body_start, footer_at = _html_points(whole, template.html_plan)
            inserts: list[tuple[int, str]] = []
            if template.templates:
                # A declarative shadow root would make the element around the footer a shadow host, which shows
                # none of its own children: `data-shadowrootmode` is an attribute like any other.
                inserts += [(at, "data-") for at in shadow_root_attributes(whole)]
            if template.preheader is not None:
                inserts.append((body_start or 0, _preheader_html(template.preheader.render(values))))
            footer = (f'<div style="{FOOTER_STYLE}">'
                      f'<a href="{html.escape(unsubscribe)}" style="{FOOTER_LINK_STYLE}">Unsubscribe</a>'
                      + (f"<br>{IDENTIFICATION_FOOTER}" if template.footer else "") + "</div>")
            if not test:
                pixel = f"{self._base}/t/o/{self.tokens.tracking_token(claim)}"
                footer += f'<img src="{pixel}" width="1" height="1" alt="">'
            inserts.append((footer_at, footer))
            html_body = _inserted(html_body, inserts)
        headers = template.headers
        feedback_id = template.feedback_id
        if test:
            headers += _subject_header(TEST_SUBJECT_PREFIX + template.subject.render(values))
            headers += f"X-Herald-Test: yes{CRLF}"
            feedback_id = feedback_id.replace(":campaign:", ":test:")
        else:
            headers += template.subject_header or _subject_header(template.subject.render(values))
        headers += self._per_message_headers(recipient, message_id, feedback_id, unsubscribe, now)
        return self._finish(message_id, recipient, headers, text, html_body, sender_domain=template.sender_domain,
                            encoded=template.encoded, account_id=template.account_id)

    def transactional_message(self, *, message_id: str, kind: str, account_id: str, recipient: str,
                              from_name: str, from_email: str, subject: str, text: str, feedback_group: str,
                              subscriber_id: str | None = None, now: datetime | None = None) -> Rendered:
        """A confirmation request or an account notice: plain text, no tracking, no other link or offer.
        `feedback_group`: Feedback-ID's first field, what complaints are to be counted by in a feedback loop
        (a list's confirmations), in the place a campaign's id takes in campaign mail; never a per-message value,
        which would make every group one message. `subscriber_id`: a confirmation's membership; the message then
        carries List-Unsubscribe and List-Unsubscribe-Post (RFC 8058, signed) with a campaign's claim naming no
        campaign, so the person whose address someone else signed up stops it with their mail client's button
        ("I did not ask for this"). Headers only: the body stays the request to confirm alone."""
        from_email = ascii_address(from_email)  # the platform's: an international domain as its A-labels
        list_headers = ""
        if subscriber_id is not None:
            unsubscribe = self.links.unsubscribe_url(account_id, subscriber_id, None, message_id)
            list_headers = (f"{_list_unsubscribe(unsubscribe, self.unsubscribe_mailto(message_id))}"
                            f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}")
        headers = (f"{_from_header(from_name, from_email)}{_subject_header(subject)}MIME-Version: 1.0{CRLF}"
                   f"Date: {self.date(now)}{CRLF}"
                   f"Message-ID: {self.message_id_header(message_id)}{CRLF}To: {ascii_address(recipient)}{CRLF}"
                   f"Auto-Submitted: auto-generated{CRLF}{list_headers}"
                   f"Feedback-ID: {_one_line(f'{feedback_group}:{account_id}:{kind}:{self.settings.sender_id}')}{CRLF}"
                   f"Content-Type: text/plain; charset=utf-8{CRLF}")
        part = body_part(text)
        # UTF-8: an internationalised local part (RFC 6532) goes in the To header as it is, as in campaign mail,
        # and the client then asks the relay for SMTPUTF8; an international domain alone goes as its A-labels.
        data = (f"{headers}Content-Transfer-Encoding: {part.encoding}{CRLF}{CRLF}").encode() + part.content
        return self._rendered(message_id, recipient, data, from_email.rpartition("@")[2].lower(), part.relaxed,
                              account_id)

    def _per_message_headers(self, recipient: str, message_id: str, feedback_id: str, unsubscribe: str,
                             now: datetime | None) -> str:
        mailto = self.unsubscribe_mailto(message_id)
        return (f"To: {ascii_address(recipient)}{CRLF}Date: {self.date(now)}{CRLF}"
                f"Message-ID: {self.message_id_header(message_id)}{CRLF}"
                f"{_list_unsubscribe(unsubscribe, mailto)}List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}"
                f"Feedback-ID: {feedback_id}{CRLF}")

    def _finish(self, message_id: str, recipient: str, headers: str, text: list[str], html_body: list[str] | None,
                sender_domain: str, encoded: dict[str, EncodedPiece], account_id: str) -> Rendered:
        boundary = f"=_herald_{message_id.replace('-', '')}"
        text_part = body_part(text, boundary, encoded)
        # The MIME lines around the parts hold no tab, no two spaces and no space at a line end: the body is
        # relaxed-canonical when its parts are.
        relaxed = text_part.relaxed
        if html_body is None:
            body = (f"Content-Type: text/plain; charset=utf-8{CRLF}Content-Transfer-Encoding: {text_part.encoding}"
                    f"{CRLF}{CRLF}").encode() + text_part.content
        else:
            html_part = body_part(html_body, boundary, encoded)
            relaxed = relaxed and html_part.relaxed
            body = (f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}{CRLF}'
                    f"--{boundary}{CRLF}Content-Type: text/plain; charset=utf-8{CRLF}"
                    f"Content-Transfer-Encoding: {text_part.encoding}{CRLF}{CRLF}").encode() + text_part.content + (
                f"{CRLF}--{boundary}{CRLF}Content-Type: text/html; charset=utf-8{CRLF}"
                f"Content-Transfer-Encoding: {html_part.encoding}{CRLF}{CRLF}").encode() + html_part.content + (
                f"{CRLF}--{boundary}--{CRLF}").encode()
        return self._rendered(message_id, recipient, headers.encode("utf-8") + body, sender_domain, relaxed,
                              account_id)

    def _rendered(self, message_id: str, recipient: str, data: bytes, sender_domain: str,
                  body_relaxed: bool, account_id: str) -> Rendered:
        """The message DKIM-signed (OpenSSL, `dkim_signing`) with the sending domain's keys, else those of its
        nearest parent domain with keys (`signing_domain`), else the account's own key of the domain or a parent
        (`customer_signers`), else the platform's default keys, else unsigned; or prepared for signing
        (`defer_signing`). `body_relaxed`: the body is known to be relaxed-canonical already."""
        mail_from = self.return_path(message_id)
        signers: Sequence[DkimSigner] | None = self._signers.get(sender_domain)
        if signers is None:  # a subdomain signs with its parent's keys (aligned), else the account's, the platform's
            operators = self._signers_of.get(sender_domain)
            if operators is None:  # worked out once per domain, not per message
                parent = signing_domain(sender_domain, self._signers)
                operators = [] if parent is None else self._signers[parent]
                if len(self._signers_of) >= SIGNING_DOMAINS_REMEMBERED:
                    self._signers_of.clear()
                self._signers_of[sender_domain] = operators
            signers = operators
            if not signers:
                own = None if self.customer_signers is None else self.customer_signers.signers(account_id,
                                                                                                sender_domain)
                signers = own or self._default_signers
        if not signers:
            return Rendered(message_id, mail_from, recipient, data)
        if self._defer_signing and any(signer.costly for signer in signers):
            return Rendered(message_id, mail_from, recipient, data,
                            signatures(data, signers, SIGNED_HEADERS, body_relaxed=body_relaxed))
        return Rendered(message_id, mail_from, recipient,
                        sign(data, signers, SIGNED_HEADERS, body_relaxed=body_relaxed))


def _list_unsubscribe(unsubscribe: str, mailto: str) -> str:
    """`List-Unsubscribe: <https…>, <mailto:…>` (RFC 2369, 8058). Its https URL alone passes 78 characters, so
    folding cannot bring the line there: it is one line (as DKIM's signer reads fastest) unless that would pass
    998 octets, then folded before the mailto; RenderError if the URL alone is too long for a line."""
    line = f"List-Unsubscribe: <{unsubscribe}>, <mailto:{mailto}?subject=unsubscribe>"
    if len(line) <= MAX_7BIT_LINE:
        return line + CRLF
    folded = _folded("List-Unsubscribe", [f"<{unsubscribe}>,", f"<mailto:{mailto}?subject=unsubscribe>"])
    if folded is None:
        raise RenderError(f"the unsubscribe URL is too long for a header line ({len(unsubscribe):,} characters)")
    return folded


def _inserted(pieces: list[str], inserts: list[tuple[int, str]]) -> list[str]:
    """The pieces with each (position in their concatenation, text) inserted there, in order of position (the
    earlier of two at one position first); a piece an insertion falls inside is split."""
    out: list[str] = []
    todo = sorted(inserts, key=lambda insert: insert[0])  # stable: the earlier of two at one position first
    offset = 0
    for piece in pieces:
        end = offset + len(piece)
        while todo and todo[0][0] < end:
            at, text = todo.pop(0)
            cut = max(at - offset, 0)
            if cut:
                out.append(piece[:cut])
            out.append(text)
            piece, offset = piece[cut:], at
        out.append(piece)
        offset = end
    out.extend(text for _, text in todo)  # at the very end
    return out


