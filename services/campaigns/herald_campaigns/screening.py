"""Content screening, pure: which prohibited categories a campaign's content matches, and what hides its footer.

PRODUCT.md, "Content and industries": a campaign is screened before it can be queued; a match sends it to staff
review with the reason attached (a `Match`: category, the text as written, where, and the list entry it matched).
PRODUCT.md, "Every message": the unsubscribe link and the "Email marketing by Herald" footer cannot be removed;
content that hides or neutralises them is refused outright (a `Refusal` with a sentence for the author).

How matching works
------------------
* Text (the sender's name and addresses, subject, preheader, the HTML body as text with its alt and title
  texts and the strings of its CSS, which `content:"..."` shows, escapes undone, the text body) is folded as a
  reader reads it (`_fold_char`): compatibility forms as the letters they draw (Unicode NFKD: mathematical bold
  or script letters, fullwidth and circled letters, ligatures, Latin Extended Additional such as "ị"),
  combining marks dropped, whether precomposed or written apart (ā→a, ķ→k, "i" + U+0301), lower case, and
  letters drawn like Latin ones read as those (Cyrillic and Greek look-alikes, dotless i (U+0131), stroked ł ø
  đ, small capitals "ᴠɪᴀɢʀᴀ"). So "kazīno"/"kazino" and "kredīts"/"kredits" (NFC or NFD) are one spelling,
  and a match still points at the text as written (`_Folded`). Invisible characters (soft hyphen, zero-width
  spaces, bidi controls, other format characters) read as nothing, so "via&shy;gra" is "viagra". Folding is
  one pass over the text; the way back to the text as written is computed only for a text that matched and
  holds a character that does not fold one for one.
* What is spelled apart is read a second time as a reader puts it together (`_Folded.respelled`): four or more
  letters spaced out by one ".", "-", "_", "*" or space as one word ("V.i.a.g.r.a", "V I A G R A"; not "U.S.A."
  or "J. R. R."), a block boundary inside a word removed ("Online ph</div><div>armacy": a letter, no space, a
  lower-case letter that does not start a function word), and digits and symbols right after a letter as the
  letters they stand for (1 i, 0 o, 3 e, 4 a, 5 s, @ a, $ s: "V1agra", "c@sino"; "50mg", "2026" stay). Rules are
  tried on that reading only near what it changed; a match shows the text as written.
* Each category lists phrases in English and Latvian in a small notation (`_PHRASES`): a space is one or more
  spaces or hyphens, `*` continues the word (a stem: "kredīt*" is kredīts, kredītu, kredītiem...), `{a|b}` is
  one of the endings or words, `-` is an optional hyphen or space ("e-pasta" is also "epasta", "e pasta"), `'`
  an optional apostrophe. Every phrase starts at the start of a word and ends at the end of one, so substrings
  never fire ("bet" is not in "better"). Rules that need context are regular expressions (`_PATTERNS`). A
  phrase right after "never", "not" (not "why not"), "don't", "avoid", "stop" (advice against it) does not fire.
* The lists hold multi-word phrases or words that are strong alone ("viagra", "warez", "forex"); a word that
  is innocent alone needs its context. Decisions (tested): "credit" alone (film credits, course credits, paying
  by credit card) does not fire, credit *offers* do ("quick loans", "ātrais kredīts", "kredīts bez ķīlas");
  "pharmacy"/"aptieka" alone (an address) does not, "online pharmacy"/"interneta aptieka" does; "casino"/
  "kazino" alone ("Casino Royale") does not, "online casino", "casino bonus", "free spins" do; Latvian
  "likmes" alone means rates too, so only betting phrases ("sporta likmes", "likmju birojs") fire; Latvian
  "akcijas" are also sales, so only stock-market phrases fire; "bez receptes" alone is also "without a
  (cooking) recipe", so it fires after a medicine word ("zāles bez receptes", "bez ārsta receptes"); "work
  from home"/"darbs no mājām" alone is how a job ad describes remote work, so it fires only with earnings in
  the same sentence ("work from home and earn", "darbs no mājām, pelni...") or as an offer ("make money from
  home"); "adult" alone (adult education) and "trading" alone (trading hours) never fire; "casino"/"kazino"
  with a bonus, a deposit or spins ("griezieni") in the same sentence fires; "escort" alone (a police escort,
  escorting children, the Ford Escort) does not, an escort with "discreet", incall or outcall does, and
  "escorts" with "24/7", "VIP", "independent" or "call now" (not police, security, armed, military or
  motorcycle escorts); a place alone ("Riga escorts") is no sign.
* Links: every URL of the HTML a client loads or a reader follows (`href`, `src`, `srcset`, a form's `action`,
  `formaction`, `background`, `poster`, CSS `url()` and `@import`), and every URL written in the text (with or
  without a scheme), is checked by host against affiliate networks, URL shorteners and betting, casino and
  online-pharmacy brands, and its path, query string and fragment, decoded (`?q=online+casino`), are screened as
  text, and so are its host's labels, split at dots, hyphens and digits (`online-casino.example`,
  `viagra4less.example`; a match may end in the top-level label, `online.casino`, not lie in it alone). A host
  matches a listed domain when it is that domain or a subdomain of it (`www.bit.ly` is bit.ly;
  `bit.ly.evil.example` and `notbit.ly` are not). Udemy links count as affiliate links only with a coupon or
  affiliate code, Amazon links only with an Associates `tag=`; a link to an executable file (.exe, .scr...) is
  flagged as malware.
* Children's data and defamation or harassment are screened only by how such requests and accusations are
  usually phrased ("send us your children's names and birthdays", "exposed as a fraud", "you will regret
  this"): whether consent was given, or an accusation is true, is for staff in review. Not screened: products
  illegal only in some countries and copyrighted images; "hate" lists unambiguous slurs, threats and
  dehumanising sentences about a group.
* Text whose letters are drawn in another order than they are stored (the bidi overrides U+202D/U+202E,
  `<bdo>`, CSS `unicode-bidi: bidi-override|isolate-override`) is refused (`_R_REVERSED`): screening reads text
  in stored order, and no newsletter, in a right-to-left language either, needs letters reversed. Embeddings,
  isolates, marks and `dir=rtl` draw a Latin word as stored and are read as nothing.

What is refused (the footer Herald appends just before `</body>`, or at the end)
-------------------------------------------------------------------------------
* A `<style>` rule with a hiding declaration (display:none, visibility:hidden, opacity:0 or filter:opacity(0),
  font-size:0..2px, zero height/width with overflow:hidden, off-screen offsets or translations (-100px or less,
  2000px or more), clip, a mask, filter:blur() of 4px or more, a scale, zoom or
  rotateX/rotateY leaving a fifth of the size or less (like a tiny font), a collapsing matrix, text-indent of
  100% or 100px with overflow:hidden, mso-hide:all, transparent or same-colour text; and any height, or a
  width under ~200px or 30% (or any short of 100% with white-space:nowrap), with overflow:hidden or paint
  containment (contain:paint, strict, content), for a div or a link, as the footer could not fit; wider, its
  lines wrap) that could reach the footer: its subject (the last compound selector) is
  not limited to a class or id and is `*` or a tag the footer is made of or sits in (div, a, br, img, body,
  html, an element still open there), or its class/id is on an element still open where the footer goes; the
  compound before a `+` (`~`) fits the element right before that one (any before it), and each compound before
  a descendant or child combinator fits an element the footer is inside. Beefree's `.image_block img+div` reaches
  the footer's <div> only when the body ends with an <img> inside an element of class image_block.
  `.preheader { display:none }`, `h1 { font-size:0 }`, `.card { max-height:200px; overflow:hidden }`,
  `.logo a { text-indent:-9999px }` and light link colours inside `@media (prefers-color-scheme: dark)` are fine;
  `div { display:none }`, `img + div { display:none }` when the body ends with an <img>, and `a { color:#fff }`
  on a white page are not. (The preheader field exists for hidden preview text.)
* An element that hides its content (inline hiding style, same text and background colour, `hidden`, `popover`
  (shown only when opened), a closed `<details>`, or one whose content is never shown such as `<template>`,
  `<style>`, `<textarea>`, `<rp>`, `<meter>`, `<progress>`), or makes it unclickable (`inert`), or cuts it to
  a height (any, with overflow:hidden or paint containment, or clamped lines) or a width its lines cannot wrap
  in (as above) still open where the footer goes, and an unclosed comment or unfinished tag there: the footer would
  be swallowed.
* A `<template shadowrootmode>` (or the older `shadowroot`) anywhere: its parent becomes a shadow host, which
  shows none of its own children, the footer among them when the host is open where the footer goes (delivery
  renames the attribute in any case).
* An element drawn over the footer, by a style attribute or rule. Wherever it sits: position:fixed with
  something drawn (a background, an image), or a box-shadow or outline 1000px or more wide. Absolutely
  positioned, an element is placed in its containing block: its nearest positioned ancestor (by a style
  attribute, or a rule for that element alone, such as `.hero { position:relative }`, on every screen and
  never undone by a position:static), else the page. Spanning that block both ways (100%, calc(100%), a
  min-height, 600px, both edges, inset) with something drawn, it covers the footer when the block is the page
  or an element still open where the footer goes, or when it reaches 1000px or a window's height beyond it; at
  the block's bottom, when the block is open there. Sticky and as tall as the window (100vh, 100%, 600px) with
  something drawn, it covers all of its parent as it scrolls by: refused when the parent is open there (or is
  the page). A rule is judged by what it could select: an element so placed, or a ::before or ::after of one
  (the footer's own <div> and link too); an element whose class or id template code writes could have any. A
  scrim or cover image filling a `position:relative` hero, a 600px picture in its own positioned box, a caption
  bar over its own picture and a sticky header are fine.
* An external style sheet (`<link rel=stylesheet>`, `@import`): its rules cannot be screened. Google Fonts' style
  sheets (fonts.googleapis.com, what builders link for a web font) hold only its fonts and are allowed.
* An unsubscribe link (`{{ unsubscribe_url }}`) or unsubscribe wording inside a hiding element or written in
  its background colour. Concealment (display:none, opacity:0, zero height...) counts whatever is inside; a
  tiny font and visibility:hidden are inherited and count only until the content sets its own again (email
  builders wrap everything in font-size:0 cells and set the size inside).
* Also in such a rule, or on an element left open: what leaves the footer's text drawn but unreadable or
  unclickable (pointer-events:none, letter-spacing of -3px or less or 100px or more, word-spacing of -10px or
  less or 600px or more, -webkit-text-security, a blend mode, filter:brightness() of 2 or more, contrast() of 0.2
  or less, an SVG filter, a thick text stroke, font-size-adjust under 0.2), an image as an element's content
  (`content:url()`, not on ::before or ::after), a motion path (offset-path), backface-visibility:hidden with a
  turn, and a value screening cannot work out in any property that can hide (attr(), env(), if(), a var() with
  more than 32 readings, math other than calc(), min(), max(), clamp(), abs()). Colours are read in hex, rgb(),
  hsl(), hwb() and CSS's named colours; lab(), lch(), oklab(), oklch(), color(), color-mix(), light-dark() and
  system colours are not converted: text so coloured counts as invisible (refused where it could be the
  footer's). Rules nested in style rules (CSS nesting) are read as the selectors they make, and var() as every
  value the message gives the property anywhere (or its fallback). A background where the footer goes in its
  text's colour (#555) or its link's (#0000ee) is refused too.
* An animation, at each of its moments that lasts, read as a style of the element it animates and refused as one
  (`_animated`): the frame it ends on when kept (animation-fill-mode forwards or both: a 0.001s animation to
  opacity:0, or one after an hour's delay), every frame when held (paused, or driven by scrolling: the footer is
  where scrolling ends), repeated forever or shown 5s or more; a fade-in passes. The @keyframes come from every
  <style> of the message (-webkit- ones too), without the !important declarations browsers ignore there. In
  Chromium the footer's own <div> and link keep their inline !important over any animation; what animates an
  element around the footer hides it. A transition is not read: both its ends are styles screened already.
* A transform list judged whole, in 3D, on the footer's box (`_composed`): (partly) behind the reader, where
  nothing is drawn (perspective() then translateZ past it, a matrix3d with w of 0 or less, a translateZ in the
  smallest `perspective` the message gives any element, as a parent's), or its functions together shrinking it
  to a fifth or moving it far off the page (rotateX(60deg) rotateX(30deg), scale(.5) scale(.3)).
* A second, fake unsubscribe link: a link that reads as unsubscribing but does not go to
  `{{ unsubscribe_url }}`.
* Template code that decides it per member (`template_refusals`): an element or an HTML comment begun in one
  branch of a condition and ended in another (or never), `</body>` in a condition, code writing CSS or
  attributes outside a quoted value.
Hiding an element that is closed and holds no unsubscribe content is fine (a hidden preview-text div).
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from html import unescape as html_unescape
from html.parser import HTMLParser
from itertools import accumulate
from urllib.parse import SplitResult, unquote, unquote_plus, urlsplit

MAX_MATCHES = 50
MAX_REFUSALS = 20
SNIPPET = 200

CATEGORIES: tuple[str, ...] = (
    "adult",                  # pornography, escort services
    "drugs",                  # illegal drugs and medicines, their smuggling
    "pirated_software",       # cracks, keygens, warez
    "weapons",                # instructions for weapons or explosives, untraceable/unlicensed arms
    "minors",                 # material exploiting minors
    "mailing_lists",          # selling or buying mailing lists
    "pharmacy",               # online pharmacies, prescription drugs without prescription
    "supplements",            # dietary, herbal and vitamin supplements, diet pills
    "horoscopes",             # horoscopes, numerology, astrology, fortune telling
    "work_from_home",         # work-from-home and easy-money "opportunities"
    "credit_debt_mortgage",   # credit, loan, debt and mortgage offers
    "affiliate",              # affiliate marketing (ClickBank, JVZoo, Udemy...) in text or links
    "day_trading",            # online trading, day-trading and stock tips, forex, binary options
    "hate",                   # hateful or abusive content: slurs, threats
    "illegal_goods",          # illegal services and goods: forged documents, counterfeits, stolen data
    "malware",                # malware offers, antivirus-disabling lures, links to executables
    "gambling",               # online or offline gambling, betting
    "mlm",                    # pyramid schemes and multi-level marketing
    "copyright",              # pirated films, music and books
    "link_shortener",         # a link through a URL shortener hides its target
    "children_data",          # collecting children's personal data (names, birthdays, photos) without consent
    "defamation_harassment",  # public accusations against a person, threats and abuse aimed at one
)

# --- folding -------------------------------------------------------------------------------------------------


def _fold_char(char: str) -> str:
    """What one character reads as: lower case, compatibility forms (mathematical, circled, superscript,
    ligature letters) as the letters they draw, diacritics and other combining marks dropped, look-alike letters
    as the Latin ones. Marks and invisible format characters read as nothing."""
    if char in _LOOKALIKES:
        return _LOOKALIKES[char]
    category = unicodedata.category(char)
    if category in ("Mn", "Me", "Cf"):
        return ""
    decomposed = unicodedata.normalize("NFKD", char)
    if category[0] not in "LN" and not (category == "So" and len(decomposed) == 1 and decomposed.isalnum()):
        return char  # punctuation and symbols stay as they are: "™" is not the letters "tm"
    out: list[str] = []
    for part in decomposed:
        if unicodedata.category(part) in ("Mn", "Me"):
            continue
        for lower in part.lower():
            if unicodedata.category(lower) not in ("Mn", "Me"):  # "İ".lower() is "i" and a dot above
                out.append(_LOOKALIKES.get(lower, lower))
    return "".join(out)


def _fold_table() -> dict[int, str]:
    """Every code point whose reading (`_fold_char`) differs from itself. Code points past 0x2FFFF, but for the
    tags and variation selectors, are scripts and private use areas that decompose into nothing Latin."""
    table: dict[int, str] = {}
    for code in (*range(0x30000), *range(0xE0000, 0xE01F0)):
        char = chr(code)
        if not (char in _LOOKALIKES or unicodedata.decomposition(char) or char.lower() != char
                or unicodedata.category(char) in ("Mn", "Me", "Cf")):
            continue
        folded = _fold_char(char)
        if folded != char:
            table[code] = folded
    for code in range(0xFF01, 0xFF5F):  # fullwidth punctuation too reads as the ASCII it copies
        table[code] = chr(code - 0xFEE0).lower()
    return table


# Letters a reader cannot tell from Latin ones (Unicode's confusables, the common ones), in lower case:
# Cyrillic, Greek, Latin letters without a decomposition (dotless i, stroked letters), small capitals.
_LOOKALIKES = {"\u0430": "a", "\u0432": "b", "\u0435": "e", "\u0451": "e", "\u043a": "k", "\u043c": "m",
               "\u043d": "h", "\u043e": "o", "\u0440": "p", "\u0441": "c", "\u0442": "t", "\u0443": "y",
               "\u0445": "x", "\u0456": "i", "\u0457": "i", "\u0458": "j", "\u0455": "s", "\u0501": "d",
               "\u051b": "q", "\u051d": "w", "\u04bb": "h", "\u04cf": "l", "\u03b1": "a", "\u03b2": "b",
               "\u03b5": "e", "\u03b7": "n", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v", "\u03bf": "o",
               "\u03c1": "p", "\u03c4": "t", "\u03c5": "u", "\u03c7": "x", "\u03b6": "z",
               # dotless i and j, Latin iota and alpha, script g, stroked and barred letters
               "\u0131": "i", "\u0237": "j", "\u0269": "i", "\u0251": "a", "\u0261": "g", "\u0142": "l",
               "\u00f8": "o", "\u0111": "d", "\u0127": "h", "\u0167": "t", "\u0180": "b", "\u0268": "i",
               "\u0289": "u", "\u0275": "o", "\u019a": "l",
               # small capitals
               "\u1d00": "a", "\u0299": "b", "\u1d04": "c", "\u1d05": "d", "\u1d07": "e", "\ua730": "f",
               "\u0262": "g", "\u029c": "h", "\u026a": "i", "\u1d0a": "j", "\u1d0b": "k", "\u029f": "l",
               "\u1d0d": "m", "\u0274": "n", "\u1d0f": "o", "\u1d18": "p", "\ua7af": "q", "\u0280": "r",
               "\ua731": "s", "\u1d1b": "t", "\u1d1c": "u", "\u1d20": "v", "\u1d21": "w", "\u028f": "y",
               "\u1d22": "z",
               # spaces, apostrophes and hyphens as the phrases write them
               "\u00a0": " ", "\u2019": "'", "\u2018": "'", "\u2010": "-", "\u2011": "-", "\u2013": "-"}
_FOLD = _fold_table()
# The characters that may not fold one for one (a mark read as nothing, a ligature as two letters; any past the
# Basic Multilingual Plane, which keeps the class a bitmap): a text without any is read position for position.
_RESIZED = re.compile("[" + "".join(re.escape(chr(code)) for code, folded in _FOLD.items()
                                    if len(folded) != 1 and code < 0x10000) + "\U00010000-\U0010ffff]")
# Characters that show nothing: soft hyphen, zero widths, joiners, invisible operators, bidi controls, the
# combining grapheme joiner, variation selectors.
_INVISIBLE = re.compile("[\u00ad\u034f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
                        "\ufe00-\ufe0f\ufeff]")
_WORD = re.compile(r"\w+")
# "Never buy email lists", "avoid payday loans", "stop gambling": advice against, not an offer ("why not" is an
# offer). (Latvian negates with a prefix, "nepērc", which is another word already.)
_NEGATED = re.compile(r"(?<!\w)(?:never|(?<!why )not|don't|dont|doesn't|won't|can't|cannot|avoid|stop|nekad)\s+$")


def _fold(text: str) -> str:
    """`text` as screening reads it (`_fold_char` of each character): one pass over the text, in C."""
    return text.translate(_FOLD)


class _Folded:
    """A text and its folding, with the way back from a span of the folding to the text as written (a folded
    character may come from several, "v" and a combining accent, or several from one, a ligature)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.folded = _fold(text)
        self._starts: list[int] | None = None

    def written(self, start: int, end: int) -> str:
        """The text as written that `folded[start:end]` reads."""
        if self._starts is None:  # only once something matched: most texts match nothing
            if _RESIZED.search(self.text):
                lengths = (len(_FOLD[code]) if code in _FOLD else 1 for code in map(ord, self.text))
                self._starts = list(accumulate(lengths, initial=0))
            else:
                self._starts = []
        starts = self._starts
        if not starts:
            return self.text[start:end]
        first = bisect_right(starts, start) - 1
        last = bisect_left(starts, end, lo=first)
        while last < len(self.text) and starts[last + 1] == end:  # marks after the last letter are part of it
            last += 1
        return self.text[first:last]

    def respelled(self) -> _Respelled | None:
        """The folding as a reader still reads it where it is spelled apart, or None where nothing is: letters
        spaced out into a word, a block boundary inside a word removed, then digits and symbols right after a
        letter read as the letters they stand for."""
        folded = self.folded
        pieces: list[str] = []
        starts: list[int] = []
        replacements: list[tuple[int, int, int, int]] = []
        copied = removed = 0
        for found in _SPACED_APART.finditer(folded):
            start, end = found.span()
            if folded[start] == _JOINED:
                kept = ""
            else:
                start -= 1  # the first letter, before the separator the pattern starts at
                kept = folded[start:end:2]
                if not kept.isalpha() and sum(map(str.isalpha, kept)) < _SPACED_LETTERS:
                    continue  # "1 2 3 4", "a b 1 2": no word a reader makes out
            pieces += (folded[copied:start], kept)
            starts.append(start - removed)
            replacements.append((start - removed, len(kept), start, end - start))
            removed += end - start - len(kept)
            copied = end
        spaced = "".join(pieces) + folded[copied:] if pieces else folded
        reading, symbols = _SYMBOLS_IN_WORD.subn(_as_letters, spaced)
        if not symbols and not replacements:
            return None
        if (symbols + len(replacements)) * _RESPELLED_REACH >= len(reading):
            windows = [(0, len(reading))]  # changes everywhere: read it all once more
        else:
            windows = _windows(heapq.merge(((start, start + length) for start, length, _, _ in replacements),
                                           (found.span() for found in _SYMBOLS_IN_WORD.finditer(spaced))))
        return _Respelled(reading, windows, starts, replacements)


# Letters (and digits) spaced out by one ".", "-", "_", "*" or space, the same one ("V.i.a.g.r.a", "V I A G R A";
# "o-n-l-i-n-e c-a-s-i-n-o" is two words), at least four letters ("U.S.A.", "a b c" and initials as "J. R. R."
# stay), each one character; or the HTML reader's mark for a block boundary between a letter and a lower-case
# one (`_JOINED`). A spaced-out word is found from the separator after its first letter: a pattern starting with
# a character class is the quick way through a text.
_SPACED_LETTERS = 4
_JOINED = "\u2028"
_SPACED_APART = re.compile(r"([.\-_* \u2028])(?:(?<=\u2028)\u2028*|(?<=[^\W_].)(?<![^\W_]{2}.)[^\W_](?![^\W_])"
                           r"(?:\1[^\W_](?![^\W_])){2,})")
# Digits and symbols read as letters right after a letter ("V1agra", "c0mp4ny", "c@sino", "ca$ino"), so "50mg",
# "2026", "10%" and "$500" stay as they are.
_SYMBOLS_IN_WORD = re.compile(r"[013-5@$](?<=[^\W\d_].)[013-5@$]*")
_AS_LETTERS = str.maketrans("10345@$", "ioeasas")
# Rules are tried on a respelled reading only at words this close before a change, or in it: a match covering
# no change is one the folding itself has (the longest rule spans fewer characters).
_RESPELLED_REACH = 200


def _as_letters(found: re.Match[str]) -> str:
    return found.group().translate(_AS_LETTERS)


class _Respelled:
    """Another reading of a folding (`_Folded.respelled`), the windows of it where rules are tried, and the way
    back from its positions to the folding's: each replacement is (its start here, its length here, start
    there, length there); a spaced-out word keeps every other character, a block boundary none."""

    def __init__(self, folded: str, windows: list[tuple[int, int]], starts: list[int],
                 replacements: list[tuple[int, int, int, int]]) -> None:
        self.folded = folded
        self.windows = windows
        self._starts = starts
        self._replacements = replacements

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the folding that `folded[start:end]` reads."""
        return (self._position(start, bisect_right(self._starts, start) - 1, end=False),
                self._position(end, bisect_left(self._starts, end) - 1, end=True))

    def _position(self, at: int, index: int, end: bool) -> int:
        if index < 0:
            return at
        start, length, folded_start, folded_length = self._replacements[index]
        if at < start + length or (end and at == start + length and length):
            return folded_start + 2 * (at - start) - (1 if end else 0)
        return at - start - length + folded_start + folded_length


def _windows(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The stretches of a reading where a rule could start and cover one of these (sorted) spans, merged."""
    windows: list[tuple[int, int]] = []
    for start, end in spans:
        low = max(0, start - _RESPELLED_REACH)
        if windows and low <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], end))
        else:
            windows.append((low, end))
    return windows


def _snippet(text: str) -> str:
    return " ".join(text.split())[:SNIPPET]


REASON_PART = 160  # characters of a value quoted in a refusal's reason


def _reason(template: str, **parts: object) -> str:
    """A refusal's sentence with the values it quotes cut short: a declaration or link of a megabyte would
    otherwise come back whole in the answer, the event and the review queue."""
    texts = {name: str(value) for name, value in parts.items()}
    return template.format(**{name: text if len(text) <= REASON_PART else text[:REASON_PART - 1] + "…"
                              for name, text in texts.items()})


# --- phrase lists ------------------------------------------------------------------------------------------------
# English first, then Latvian. Notation: see the module docstring.

_PHRASES: dict[str, tuple[str, ...]] = {
    "adult": (
        "porn*", "xxx {video*|movie*|site*|cam*}", "sex {video*|cam*|chat*|dating|tape*|toy*}", "live sex",
        "adult {dating|video*|movie*|content|site*|webcam*}", "nude cam*", "webcam girl*", "cam girl*",
        "camgirl*", "escort {service*|agenc*|girl*|lad*}", "call girl*", "erotic massage*",
        "happy ending massage*", "hot singles", "hot local {girls|singles|women|babes|moms}",
        "{girls|babes|ladies} {visit|come to} your {hotel*|room|place}", "horny", "nsfw", "hentai", "onlyfans leak*",
        "eskorta {pakalpojum*|meiten*|aģentūr*|dienest*}", "intīm* {pakalpojum*|iepazīšan*}",
        "seksa {video*|čat*|kamer*|rotaļliet*|pakalpojum*|iepazīšan*}", "erotisk* {masāž*|pakalpojum*}",
        "pieaugušo {video*|filmas|filmu|filmām|saturs|saturu|vietn*|iepazīšan*}", "kailbild*",
    ),
    "drugs": (
        "cocaine", "heroin", "methamphetamine*", "crystal meth", "fentanyl", "mephedrone", "mdma", "ketamine",
        "lsd tab*", "buy lsd", "ecstasy {pill*|tablet*}", "magic mushroom*", "psilocybin",
        "{buy|order} {weed|cannabis|marijuana|drugs}", "{weed|cannabis|marijuana} delivery",
        "{weed|cannabis|marijuana|drugs} for sale",
        "thc {vape*|cart*}", "{party|recreational} drug*", "{drugs|weed|cannabis|marijuana|coke} delivered",
        "colombian {blow|coke|snow}", "narcotics",
        "synthetic cannabinoid*", "research chemicals", "legal high*", "{darknet|dark web} market*",
        "narkotik*", "{narkotisk*|psihotrop*} viel*", "kokaīn*", "heroīn{s|u|a|am|ā}", "amfetamīn*",
        "metamfetamīn*", "fentanil*", "mefedron*", "ketamīn{s|u|a}", "ekstazī",
        "{pērc*|pasūti*|nopērc*} {marihuān*|zālīt*}", "marihuān* {piegād*|pārdošan*}",
        "halucinogēn* sēn*", "sintētisk* kanabinoīd*", "{nelegāl*|nelikumīg*} medikament*",
        "medikament* kontraband*",
    ),
    "pirated_software": (
        "warez", "keygen*", "{serial|license|licence|product|cd} key generator*", "crack download*",
        "download crack*", "cracked {software|version*|apps}",
        "full version crack*", "full version {free|for free}", "free full version*",
        "{patch|crack|keygen|activator|serial} included", "serial crack*", "crack and serial", "nulled",
        "pirated {software|windows|games}",
        "{kms|windows|office} activator", "activation bypass",
        "uzlauzt* {programm*|versij*|spēl*}", "pirātisk* {programm*|programmatūr*|datorprogramm*|spēl*}",
        "nelicencēt* programm*", "{licences|licenču} atslēg* ģenerator*", "atslēgu ģenerator*",
        "programm* bez licenc*",
    ),
    "weapons": (
        "{how to make|make|build|making} a bomb", "bomb making", "pipe bomb*", "homemade {explosive*|bomb*}",
        "{make|making|build|building} explosives", "molotov cocktail*", "3d printed {gun*|firearm*|weapon*}",
        "{ghost|untraceable} {gun*|firearm*}", "auto sear*", "full auto conversion", "buy grenade*", "tatp",
        "c4 explosive*", "napalm recipe*", "buy guns online", "{build|building|make|making} an ied",
        "{ied|ieds} {guide*|instructions|recipe*}",
        "{convert|converting} {your |an |a |}{ar-15|ar15|ak-47|ak47|rifle|glock|pistol|gun|semi-auto} to full auto",
        "full auto {kit*|conversion kit*|switch*}", "glock switch*",
        "{guns|firearms|weapons} without {a licen*|licen*|background check*}",
        "{assault rifle*|silencer*|suppressor*} for sale",
        "kā {izgatavot|pagatavot|uztaisīt} {bumbu|spridzekli|sprāgstvielas|sprāgstvielu|ieroci|granātu}",
        "{bumb*|spridzekļ*|sprāgstviel*|granāt*} izgatavošan*", "pašdarināt* {spridzekļ*|bumb*|sprāgstviel*}",
        "molotova kokteil*", "{pērc*|nopērc*} {granāt*|spridzekļ*}", "{ieroč*|šaujamieroč*} bez {atļauj*|licenc*}",
        "nereģistrēt* {ieroč*|šaujamieroč*}", "3d drukāt* {ieroč*|šaujamieroč*}",
    ),
    "minors": (
        "child porn*", "kiddie porn*", "underage {porn*|nude*|sex*}", "preteen {nude*|model*|sex*}",
        "teen nude*", "{teen|underage} {girl*|boy*} {pic*|pix|photo*|video*|cam*}", "jailbait", "lolicon",
        "shotacon", "pedophil*", "paedophil*",
        "bērnu porn*", "nepilngadīg* {porn*|kail*|erotik*}", "seks* ar nepilngadīg*", "pedofil*",
    ),
    "mailing_lists": (
        "{buy|purchase} {email|e-mail} {list*|database*|address*|leads}", "buy an email list",
        "{email|mailing} {list*|database*|address*|leads} for sale", "{bulk|targeted|b2b|verified} email list*",
        "fresh email lead*", "email {extractor*|harvester*|scraper*}", "email list rental",
        "{b2b|business|consumer} {contact|email|lead|leads} {database*|list*|data}",
        "{sell|selling|buy} {b2b |business |}contact {database*|list*|data}", "verified decision makers",
        "{pērc*|pirkt|nopērc*|nopirkt|iegādāj*|pārdod*|pārdodam} e-past* {adres*|adrešu|sarakst*|datubāz*|kontakt*}",
        "e-past* {adres*|adrešu|sarakst*|datubāz*|kontakt*} pārdošanā",
        "{pērc*|pirkt|nopērc*|iegādāj*|pārdod*|pārdodam} adresātu sarakst*",
        "adresātu sarakst* {pārdošanā|pārdod*}", "klientu datubāz* pārdošanā",
    ),
    "pharmacy": (
        "viagr*", "cialis*", "levitra*", "kamagra*", "sildenafil*", "tadalafil*", "vardenafil*", "xanax*",
        "valium*", "diazepam*", "alprazolam*", "tramadol*", "oxycodone", "oxycontin", "hydrocodone", "vicodin",
        "percocet", "adderall*", "ambien", "zolpidem*", "phentermine", "modafinil*", "clonazepam*",
        "lorazepam*", "{online|internet|canadian|mexican} pharmac*", "online drugstore*", "pharmacy online",
        "no prescription {needed|required}", "ozempic*", "wegovy*", "mounjaro*", "semaglutide*", "tirzepatide*",
        "without a doctor's {visit|prescription|appointment|consultation}", "without seeing a doctor",
        "no doctor's {visit|prescription|appointment} {needed|required}", "generic {meds|viagra|cialis}",
        "{meds|medication*|medicine*|pills|drugs|tablets|antibiotic*|painkiller*} without {a |}prescription",
        "{buy|cheap|discount|order} {meds|pills} online", "cheap {meds|pills}", "rx meds",
        "{prescription|erectile dysfunction|ed} {pills|drugs|meds} online", "ed pills",
        "{interneta|tiešsaistes|online} aptiek*", "e-aptiek*", "aptiek* internetā", "bez ārsta recept*",
        "{zāles|zāļu|medikament*|tablet*|antibiotik*|pretsāpju*|līdzekļ*} bez recept*",
        "{potenc*|erekcij*} {tablet*|līdzekļ*|zāles}",
    ),
    "supplements": (
        "{dietary|diet|herbal|vitamin|nutritional|food|weight loss|fat burning} supplement*",
        "{weight loss|diet|slimming|keto|keto diet|fat burning|miracle} pill*", "slimming tea*", "fat burner*",
        "appetite suppressant*", "detox tea*", "testosterone booster*", "male enhancement",
        "hgh supplement*", "colon cleanse*", "lose weight fast",
        "{keto|slimming|weight loss|diet|fat burning} gumm*", "{melt*|burn*} {belly|stubborn|body} fat",
        "lose weight while you sleep",
        "uztura bagātinātāj*", "{augu|vitamīnu} piedev*",
        "{tievēšanas|diētas|svara zaudēšanas|tauku dedzināšanas} {tablet*|līdzekļ*|tēj*|kapsul*|preparāt*}",
        "tauku dedzinātāj*", "{detoksikācijas|detoks} tēj*",
        "testosterona {paaugstinātāj*|pastiprinātāj*|booster*}",
    ),
    "horoscopes": (  # "numerolog*" and "astrolog*" are also the Latvian numeroloģija, astroloģija (folded)
        "horoscope*", "numerolog*", "astrolog*", "tarot", "psychic {reading*|hotline*}", "love spell*",
        "zodiac sign*", "birth chart*", "fortune {telling|teller*}", "life path number*", "angel number*",
        "what the universe is telling you",
        "horoskop*", "zodiaka zīm*", "taro {kārt*|lasījum*}", "zīlēšan*",
        "zīlniek*", "zīlniec*", "mīlestības burvestīb*", "natāl* kart*", "{likteņa|dzīves ceļa} skaitl*",
    ),
    "work_from_home": (
        "{make|earn} money {from home|online}", "earn from home", "{extra income|extra cash} from home",
        "{work from home|work at home|home based business} opportunit*", "be your own boss",
        "get paid to {take survey*|click}", "data entry from home", "{stuff envelopes|envelope stuffing}",
        "laptop lifestyle", "quit your day job",
        "{pelni|nopelni|pelnīt|nopelnīt} no mājām", "{pelni*|nopelni*} naudu internetā",
        "{viegl*|ātr*} peļņ*", "viegli nopelnīt", "esi pats sev {priekšnieks|boss*}",
        "papildu ienākum* no mājām",
    ),
    "credit_debt_mortgage": (
        "{payday|quick|fast|instant|easy|cash|personal|guaranteed|low interest|bad credit} loan*",
        "guaranteed approval", "loan approval", "pre-approved {loan*|credit*|for a loan}", "no credit check*",
        "bad credit {ok|okay|accepted|welcome}", "{credit repair|repair your credit|fix your credit}",
        "boost your credit score", "debt {consolidation|relief|settlement|management plan*}",
        "consolidate your debt*", "{get out of|eliminate your} debt*", "refinance your mortgage",
        "mortgage {refinanc*|offer*|approval}", "lower your mortgage", "reverse mortgage*",
        "home equity loan*", "cash advance*", "loan offer*", "apply for a loan", "get a loan",
        "{credit|credit card} offer*", "increase your credit limit", "instant credit",
        "consumer credit", "quick cash", "need cash fast", "even with bad credit",
        "ātr* {kredīt*|aizdevum*}", "{kredīt*|aizdevum*} bez {ķīlas|galvotāj*|izziņ*}",
        "{patēriņa|sms|hipotekār*|mājokļa} kredīt*", "kredīt* ar sliktu kredītvēstur*",
        "slikt* kredītvēstur*", "{kredīt*|parād*} {konsolidācij*|apvienošan*|refinansēšan*}",
        "refinansē* kredīt*", "parādu dzēšan*", "atbrīvo* no parādiem", "hipotēk{a|as|u|ai|ā|ām}", "kredītlīnij*",
        "{kredīt{a|u|s}|aizdevum{a|u|s}} piedāvājum*", "piesakies {kredīt*|aizdevum*}", "aizņemies naudu",
    ),
    "affiliate": (
        "clickbank", "jvzoo", "warriorplus", "warrior plus", "digistore24", "hoplink*",
        "affiliate {link*|commission*|marketing|program*|offer*|network*}", "as an affiliate",
        "i {may|might} earn a commission", "{earn|earning} commission*", "commission on every sale",
        "{my|our} {referral|partner} link*", "{and|then} i get paid",
        "cpa {offer*|network*}", "udemy coupon*", "free udemy course*",
        "{filiāļu|partneru|affiliate|afiliēt*} mārketing*", "{partneru|affiliate} {saite*|saiti|saitēm}",
        "komisij* no katr* pārdošan*",
    ),
    "day_trading": (
        # Not "stock alerts" or "stock picking" (inventory), nor "guaranteed returns" (of goods).
        "day {trading|trader*}", "daytrad*", "binary option*",
        # Not "forex" alone: a bank's "forex exchange rates" and bureaux de change are no offer.
        "forex {trading|trader*|trade*|signal*|robot*|bot*|tip*|course*|mentor*|broker*|profit*|strateg*}",
        "{trade|trading|learn} forex", "forex and {crypto|cfd*|binary option*}", "penny stock*", "stock {tips|picks}",
        "{trading|crypto} signal*", "trading {bot*|robot*}", "copy trading", "cfd trading", "guaranteed profit*",
        "guaranteed {investment|monthly|weekly|daily} return*", "pump and dump", "next big stock",
        "insider trading tip*", "stock market {tip*|advice}",
        "buy now before it {explodes|moons|skyrockets|takes off}",
        "dienas tirdzniecīb*", "binār* opcij*", "{tirdzniecības|kriptovalūt*} signāl*",
        "tirdzniecības {robot*|bot*}", "garantēt* {peļņ*|ienesīg*|atdev*}", "kopēšanas tirdzniecīb*",
        "penny akcij*", "akciju tirg* {padom*|ieteikum*|prognoz*}", "biržas {padom*|ieteikum*}",
    ),
    "hate": (
        "faggot*", "kike", "kikes", "white power", "sieg heil", "heil hitler", "gas the jews",
        "death to {the |}{jews|muslims|gays|blacks|immigrants|refugees}", "subhuman*", "untermensch*",
        "kill yourself", "we know where you live", "you deserve to die", "race traitor*", "white genocide",
        "great replacement",
        "nēģer*", "pidar*", "pider*", "pederast*", "žīd{s|i|u|iem|us|a}", "zemcilvēk*",
        "nāvi {žīdiem|krieviem|latviešiem|geijiem|musulmaņiem|imigrantiem|bēgļiem}", "nogalini sevi",
        "nogalinies", "ej pakārties", "mēs zinām, kur tu dzīvo",
    ),
    "illegal_goods": (
        # Security notices talk about stolen cards, hacked accounts and counterfeit money too: offers only.
        "fake {passport*|id|ids|id card*|driver's licen*|diploma*}", "buy a diploma", "buy diploma*",
        "{buy|order|undetectable} {counterfeit|fake} {money|bill*|banknote*|note*}",
        "counterfeit {money|bill*|banknote*} for sale",
        "{real|undetectable|high quality|quality|buy|order} counterfeit {euro*|dollar*|pound*|cash|currency}",
        "counterfeit {euro*|dollar*|pound*|currency} for sale", "{replica|designer replica} {watch*|handbag*|bag*}",
        "designer replica*", "{cvv|cc} dump*", "fullz", "{buy|fresh} stolen {credit card*|card*}",
        "stolen {credit card*|card*} for sale", "{buy|selling} {hacked|cloned} {account*|card*}",
        "{hacked|cloned} {accounts|cards} for sale", "{buy|selling} card skimmer*", "hire a hacker",
        "hacker for hire", "ddos {for hire|attack* for hire}", "{rent|order|buy} {a |}ddos*", "booter service*",
        "money laundering service*", "{contraband|untaxed|smuggled} cigarette*",
        "viltot* {pase|pasi|pases|pasēm|dokument*|diplom*|apliecīb*|tiesīb*}",
        "{pērc*|nopērc*|pārdod*|pārdodam} {viltot*|zagt*|uzlauzt*} *",
        "{pirkt|nopirkt|pērc*|nopērc*} diplom*", "diplom* bez mācībām", "kontrabandas {cigaret*|alkohol*|prec*}",
        "{cigaret*|alkohol*} bez akcīz*", "replik* {pulksteņ*|som*}", "{pasūti*|pērc*|nopērc*} ddos*",
    ),
    "malware": (
        # Security newsletters name ransomware, keyloggers and trojans too: offers and lures only.
        "{undetectable|buy} keylogger*", "keylogger* for sale", "ransomware {for sale|kit*}", "buy ransomware",
        "rat builder*", "crypter*", "botnet {for rent|for hire|rental}", "rent a botnet", "stealer log*",
        "{malware|exploit kit*} for sale", "{disable|turn off|deactivate} {your |the |}anti-virus*",
        "{enable|please enable} {macros|content|editing} to {view|see|open|read|display}",
        "{atslēdz*|izslēdz*|deaktivizē*} {savu |}antivīrus*", "{iespējo*|ieslēdz*} makro*",
    ),
    "gambling": (
        "online casino*", "casino online", "casino {bonus*|game*|spin*}", "play casino", "{free|bonus} spins",
        "{no deposit|deposit} bonus*", "sports betting", "sportsbook*", "bet now", "place {your|a} bet*",
        "betting {odds|tip*|site*}", "bookmaker*", "{online|play} slots", "slot machine*", "online poker",
        "poker online", "online {roulette|blackjack}", "gambling", "win real money", "progressive jackpot*",
        "bet365", "unibet", "betsafe", "optibet", "olybet", "pokerstars", "betsson", "888casino", "888poker",
        "williamhill", "paddypower", "betfair", "ladbrokes", "betway", "1xbet", "draftkings", "fanduel", "tonybet",
        "azartspēl*", "{online|tiešsaistes|interneta} kazino", "kazino {bonus*|spēl*|griezien*}", "spēlē kazino",
        "{bezmaksas|bonusa} griezien*", "{griezien*|bonus*} bez depozīt*", "depozīta bonus*", "sporta likm*",
        "likmju {biroj*|koeficient*|vietn*|lap*|padom*}", "{veic|veiciet|liec|lieciet|izdari|izdariet} likm*",
        "spēļu automāt*", "laimē* īst* naud*", "tiešsaistes {poker*|rulet*}", "{poker*|rulet*} tiešsaistē",
        "džekpot*",
    ),
    "mlm": (
        "mlm", "multi-level marketing", "pyramid scheme*", "ponzi", "downline*", "binary compensation plan*",
        "cash gifting", "gifting circle*", "earn from everyone {they|you} {bring*|recruit*|sign*}",
        "piramīd* {shēm*|spēl*}", "finanšu piramīd*", "{daudzpakāpju|daudzlīmeņu} mārketing*",
        "tīkla mārketing*", "piesaisti {draugus|cilvēkus} un {pelni|nopelni}",
    ),
    "copyright": (
        "{free movie|free music|free mp3} download*", "download {full|free} movie*", "download free mp3*",
        "full movie* free", "watch {movies|full movies} free", "watch free movies", "free movies online",
        "pirated {movie*|music|film*|ebook*|book*}", "torrent download*", "download torrent*", "via torrent",
        "torrent link*", "pirate bay", "no copyright infringement intended", "leaked {album*|movie*}",
        "camrip", "dvdrip",
        "lejupielād* {film*|mūzik*|albom*} bez maksas", "bezmaksas {film*|mūzik*|albom*} lejupielād*",
        "pirātisk* {film*|mūzik*|grāmat*|satur*}",
        "torrent* lejupielād*", "lejupielād* torrent*", "torentu", "torrentu", "nopludināt* {film*|albom*}",
    ),
    "children_data": (  # asking parents for their children's data: consent is for staff to judge
        "{name|names} and {birthday*|date of birth|age*} of your {child*|kid*|son|daughter}",
        "school photos of your {child*|kid*}", "{photo*|picture*} of your {child*|kid*} in {swimwear|the bath}",
        "{atsūti*|nosūti*|iesūti*|augšupielādē*} {mums |}{sava |savu |savus |}bērn{a|u} {vārd*|dzimšanas dat*|"
        "dzimšanas dien*|personas kod*|foto*|bild*}",
    ),
    "defamation_harassment": (  # accusations against a person and threats aimed at one, as they are phrased
        "exposed as a {fraud*|scammer|liar|thief|cheat|pedophile|paedophile|rapist|criminal|predator|con artist}",
        "the truth about {my|our} ex", "{my|our} ex is a {liar|cheat|thief|psycho|criminal|whore|slut}",
        "{he|she|they} {is|are} a {known |convicted |}{pedophile|paedophile|rapist|child molester}",
        "you will pay for this", "{we|i} will {find|hunt} you down", "{we|i}'ll {find|hunt} you down",
        "{the whole town|your employer|your boss|your family} will know what you",
        "{stupid|dirty|fat|ugly} {bitch|whore|slut}", "name and shame {him|her|them}",
        "tu to vēl nožēlosi", "{mēs tevi atradīsim|es tevi atradīšu} un",
        "atmaskot* kā {krāpniek*|meli*|zagl*|pedofil*}",
    ),
}

# Rules that need context, as regular expressions over folded text: (label, pattern, the first letters of the
# words they can start with). Labels say what they look for.
_MONEY = r"(?:[$€£]\s?\d[\d,.]*|\d[\d,.]*\s?(?:[$€£]|eur\b|euros?\b|eiro\b|usd\b|dollars\b))"
# The words between two of a rule's in one sentence (a block boundary ends one too, `_JOINED` included).
_IN_SENTENCE = r"\b[^.!?\n\u2028\u2029]{0,80}?\b"
_CASINO = r"casinos?(?!\w|[\s-]+royale)"  # "Casino Royale" is a film
_CASINO_OFFER = r"(?:bonus\w*|deposit\w*|spins)"
_KAZINO = r"kazino\w*(?![\s-]+royale)"
_KAZINO_OFFER = r"(?:bonus\w*|depozit\w*|griezien\w*)"
# An escort as a service, not a police escort or escorting children: with "discreet", incall or outcall, or
# (escorts) "24/7", "VIP", "independent", "call now".
_ESCORT = r"(?<!police )(?<!security )(?<!armed )(?<!military )(?<!motorcycle )escort"
_ESCORT_HINT = r"(?:discreet\w*|discrete\w*|in-?calls?|out-?calls?)(?!\w)"
_ESCORTS_HINT = r"(?:24/7|24h|vip|independent|call\s+(?:now|me))(?!\w)"
_ESKORT = r"(?<!policijas )eskort\w*"
_ESKORT_HINT = r"(?:diskret\w*|24/7|vip|neatkarig\w*)(?!\w)"
# Groups a dehumanising sentence names (the hate patterns): people, not ideas.
_GROUPS = (r"(?:immigrants|migrants|refugees|foreigners|jews|muslims|christians|gays|lesbians|blacks|roma|gypsies|"
           r"arabs|africans|asians|mexicans|russians|latvians|ukrainians|women|trans\s+people)")
_GROUP_KEYS = ("imm", "mig", "ref", "for", "jew", "mus", "chr", "gay", "les", "bla", "rom", "gyp", "ara", "afr", "asi",
               "mex", "rus", "lat", "ukr", "wom", "tra")
_CHILDREN = r"(?:child|children|kid|kids|son|daughter)(?:'s|s'|')?"
_PATTERNS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "work_from_home": (
        ("work from home + earnings in the same sentence",
         r"work(?:ing)?[\s-]+(?:from|at)[\s-]+home" + _IN_SENTENCE + r"(?:earn\w*|money|cash|income|profit\w*|rich)\b",
         ("wor",)),
        ("earn/make money a day or week",
         r"(?:earn|make|making|earning)\s+(?:up\s+to\s+)?" + _MONEY + r"\s*(?:/|a|per|each|every)\s*(?:day|week)\b",
         ("ear", "mak")),
        ("darbs no mājām + peļņa tajā pašā teikumā",
         r"(?:darb\w*|strad\w*)\s+(?:no\s+majam|majas)" + _IN_SENTENCE +
         r"(?:pelni\w*|nopelni\w*|pelnit\w*|nopelnit\w*|pelna\w*|ienakum\w*)",
         ("dar", "str")),
        ("earn money from your kitchen table, couch or phone",
         r"(?:earn|make|making|earning)\s+(?:up\s+to\s+)?" + _MONEY + _IN_SENTENCE +
         r"from\s+(?:your\s+)?(?:kitchen\s+table|couch|sofa|bed|phone|laptop)\b", ("ear", "mak")),
        ("nopelni N € dienā/nedēļā",
         r"(?:nopelni\w*|pelni\w*)\s+(?:lidz\s+)?" + _MONEY + r"\s*(?:/\s*)?(?:dien\w*|nedel\w*)",
         ("nop", "pel")),
    ),
    "credit_debt_mortgage": (
        ("a loan or credit up to a sum of money",
         r"(?:borrow|loans?|credit|kredit(?:s|u|i|us)|aizdevum(?:s|u|i|us)|aiznemies)\s+(?:of\s+)?"
         r"(?:up\s+to|lidz)\s+" + _MONEY, ("bor", "loa", "cre", "kre", "aiz")),
        ("borrow a sum of money today or now",
         r"borrow\s+" + _MONEY + r"\s+(?:today|now|tonight|instantly|in\s+minutes)\b", ("bor",)),
        ("approved in N minutes or seconds",
         r"approved\s+(?:with)?in\s+(?:\d+|one|five|ten)\s+(?:minutes?|mins?|seconds?)\b", ("app",)),
    ),
    "day_trading": (
        ("a stock or coin will multiply or explode",
         r"(?:stock|shares?|coin|token|crypto)\s+(?:will|could|is\s+going\s+to|is\s+set\s+to|set\s+to)\s+"
         r"(?:\d+x|moon|skyrocket|explode)\b", ("sto", "sha", "coi", "tok", "cry")),
    ),
    "mailing_lists": (
        ("millions of email addresses",
         r"\d[\d.,]*\s*(?:million|mln|milj\w*|k)\s+(?:verified\s+|targeted\s+|fresh\s+|valid\s+)?"
         r"(?:e[\s-]?mail|e[\s-]?past\w*)\s+(?:address\w*|adres\w*|leads|contacts|kontakt\w*)",
         tuple("0123456789")),
    ),
    "supplements": (
        ("lose N kg/pounds in N days", r"(?:lose|notieve\w*)\s+(?:up\s+to\s+|lidz\s+|par\s+)?\d+\s?"
         r"(?:kg|kilos?|lbs?|pounds|kilogram\w*)\s+(?:in|in\s+just|(?:tikai\s+)?)\s*\d+\s+(?:days|weeks|dien\w*|nedel\w*)",
         ("los", "not")),
    ),
    "hate": (
        ("n-word", r"n[i1]gg(?:er|a|az|ers|as)(?!\w)", ("nig", "n1g")),
        ("a group called vermin, animals or a disease",
         _GROUPS + r"\s+are\s+(?:nothing\s+but\s+)?(?:vermin|rats|cockroaches|parasites|animals|a\s+plague|a\s+disease|"
         r"an\s+infestation|filth|scum|subhuman)\b", _GROUP_KEYS),
        ("a group to be driven out or wiped out",
         _GROUPS + _IN_SENTENCE + r"(?:must|should|will)\s+be\s+(?:driven\s+out|exterminated|wiped\s+out|gassed|"
         r"eradicated|hanged|shot)\b", _GROUP_KEYS),
    ),
    "children_data": (
        ("send us your children's names, birthdays or photos",
         r"(?:send|share|upload|give|tell|submit|email)\s+(?:us\s+(?:your\s+)?|your\s+)" + _CHILDREN +
         r"\s+(?:full\s+)?(?:names?|birthdays?|dates?\s+of\s+birth|photos?|pictures?|school\w*|address\w*|ages?|"
         r"details|data|passports?)\b", ("sen", "sha", "upl", "giv", "tel", "sub", "ema")),
    ),
    "gambling": (
        ("casino and a bonus, a deposit or spins in the same sentence",
         _CASINO + _IN_SENTENCE + _CASINO_OFFER + r"(?!\w)", ("cas",)),
        ("a bonus, a deposit or spins and casino in the same sentence",
         _CASINO_OFFER + _IN_SENTENCE + _CASINO, ("bon", "dep", "spi")),
        ("kazino un bonuss, depozīts vai griezieni tajā pašā teikumā",
         _KAZINO + _IN_SENTENCE + _KAZINO_OFFER, ("kaz",)),
        ("bonuss, depozīts vai griezieni un kazino tajā pašā teikumā",
         _KAZINO_OFFER + _IN_SENTENCE + _KAZINO, ("bon", "dep", "gri")),
    ),
    "adult": (
        ("escort and discreet, incall or outcall in the same sentence",
         _ESCORT + r"s?" + _IN_SENTENCE + _ESCORT_HINT, ("esc",)),
        ("discreet, incall or outcall and escort in the same sentence",
         _ESCORT_HINT + _IN_SENTENCE + _ESCORT + r"s?(?!\w)", ("dis", "inc", "in", "out")),
        ("escorts and 24/7, VIP, independent or call now in the same sentence",
         _ESCORT + r"s" + _IN_SENTENCE + _ESCORTS_HINT, ("esc",)),
        ("24/7, VIP or independent and escorts in the same sentence",
         r"(?:24/7|24h|vip|independent)" + _IN_SENTENCE + _ESCORT + r"s(?!\w)", ("24", "vip", "ind")),
        ("eskorts un diskrēti, 24/7 vai VIP tajā pašā teikumā",
         _ESKORT + _IN_SENTENCE + _ESKORT_HINT, ("esk",)),
    ),
    "mlm": (
        ("network marketing (not social)", r"(?<!social )(?<!social-)network[\s-]+marketing(?!\w)", ("net",)),
        ("recruit friends and earn from them",
         r"recruit\w*\s+(?:\d+|two|three|four|five|your)\s+(?:friends|people|others|members)" + _IN_SENTENCE +
         r"(?:earn\w*|paid|income|commission\w*|money)\b", ("rec",)),
    ),
    "copyright": (
        ("stream or watch a new film free",
         r"(?:stream|watch)\s+(?:the\s+)?(?:new\s+|latest\s+)?(?:[\w'-]+\s+){0,3}?(?:movie|film|series|episode)s?\s+"
         r"(?:online\s+)?(?:for\s+)?free\b", ("str", "wat")),
    ),
}

# --- link lists --------------------------------------------------------------------------------------------------

_AFFILIATE_DOMAINS = (
    "clickbank.net", "clickbank.com", "jvzoo.com", "jvz1.com", "jvz2.com", "jvz3.com", "jvz4.com", "jvz5.com",
    "jvz6.com", "jvz7.com", "jvz8.com", "jvz9.com", "warriorplus.com", "digistore24.com", "digistore24.de",
    "shareasale.com", "linksynergy.com", "cj.com", "anrdoezrs.net", "jdoqocy.com", "tkqlhce.com", "dpbolvw.net",
    "kqzyfj.com", "qksrv.net", "emjcd.com", "afcyhf.com", "awltovhc.com", "ftjcfx.com", "lduhtrp.net",
    "tqlkg.com", "awin1.com", "zenaps.com", "impact.com", "sjv.io", "pxf.io", "7eer.net", "evyy.net",
    "prf.hn", "tradedoubler.com", "go2cloud.org", "avantlink.com", "pepperjamnetwork.com", "flexlinkspro.com",
)
# Public shorteners anyone can put any target behind, kept here by hand (a new one is a line). Brands' own short
# domains (nyti.ms, youtu.be, go.nasa.gov) lead only to their owner's site and are not listed: public lists that
# mix both in would flag every newsletter linking to them.
_SHORTENER_DOMAINS = (
    "bit.ly", "bitly.com", "bitly.is", "ibit.ly", "j.mp", "bit.do", "tinyurl.com", "tinyurl.mobi", "t.co", "goo.gl",
    "goo.su", "ow.ly", "ht.ly", "is.gd", "v.gd", "da.gd", "x.gd", "buff.ly", "rebrand.ly", "cutt.ly", "cutt.us",
    "shorturl.at", "shorturl.me", "shorturl.gg", "shorturl.asia", "shorturl.ae", "tiny.cc", "tiny.pl", "tiny.ee",
    "tny.im", "tny.so", "rb.gy", "t.ly", "s.id", "shorte.st", "adf.ly", "adfoc.us", "bc.vc", "ouo.io", "ouo.press",
    "bl.ink", "lnkd.in", "soo.gd", "clck.ru", "vk.cc", "u.to", "qr.ae", "kutt.it", "dub.sh", "snip.ly", "zpr.io",
    "t2m.io", "surl.li", "urlzs.com", "alturl.com", "budurl.com", "notlong.com", "lc.cx", "q.gs", "href.li",
    "anon.to", "amzn.to", "tiny.one", "shorturl.com", "qrco.de", "short.gy", "urlz.fr", "trib.al", "dlvr.it",
    "ift.tt", "1url.com", "hyperurl.co",
    # IP loggers: a shortener that also records who clicked
    "iplogger.org", "iplogger.com", "grabify.link",
)
# Betting, casino and online-pharmacy brands: a link to one needs no telling words. (The host's labels are read
# as words too, so a brand in the gambling phrases, "bet365", "unibet", is found under any top-level domain.)
_GAMBLING_DOMAINS = (
    "bet365.com", "pokerstars.com", "pokerstars.eu", "pokerstars.net", "888.com", "888casino.com", "888poker.com",
    "888sport.com", "betsson.com", "optibet.com", "optibet.lv", "olybet.com", "olybet.lv", "betsafe.com",
    "betsafe.lv", "unibet.com", "unibet.lv", "unibet.co.uk", "williamhill.com", "paddypower.com", "betfair.com",
    "ladbrokes.com", "betway.com", "bwin.com", "1xbet.com", "betfred.com", "skybet.com", "draftkings.com",
    "fanduel.com", "tonybet.com", "tonybet.lv", "stake.com", "pinnacle.com",
)
_PHARMACY_DOMAINS = (
    "canadadrugs.com", "canadapharmacy.com", "northwestpharmacy.com", "pharmacy2u.co.uk", "docmorris.de",
    "shop-apotheke.com",
)
_DOMAINS: dict[str, str] = {domain: "affiliate" for domain in _AFFILIATE_DOMAINS}
_DOMAINS.update({domain: "link_shortener" for domain in _SHORTENER_DOMAINS})
_DOMAINS.update({domain: "gambling" for domain in _GAMBLING_DOMAINS})
_DOMAINS.update({domain: "pharmacy" for domain in _PHARMACY_DOMAINS})
_UDEMY_AFFILIATE = re.compile(r"(?:^|&)(?:couponcode|ranmid|raneaid|ransiteid|referralcode)=", re.IGNORECASE)
_AMAZON = re.compile(r"(?:^|\.)amazon\.(?:[a-z]{2,3}|co\.[a-z]{2}|com\.[a-z]{2})$")
_AMAZON_TAG = re.compile(r"(?:^|&)tag=", re.IGNORECASE)
_EXECUTABLE = re.compile(r"\.(?:exe|scr|pif|bat|cmd|vbs|vbe|jse|wsf|msi|hta|jar|ps1|lnk|apk)$", re.IGNORECASE)

_URL_JUNK = re.compile(r"[\t\n\r]")
_HTTP_PREFIX = re.compile(r"^(https?):/*", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*:", re.IGNORECASE)
_BARE_HOST = re.compile(r"^(?:[\w\-]+\.)+[a-z]{2,}(?:[:/?#]|$)", re.IGNORECASE)
_HTTP_IN = re.compile(r"https?:", re.IGNORECASE)

# --- compiled rules ----------------------------------------------------------------------------------------------


_KEY = 6  # rules are indexed by up to this many first letters of their first word


@dataclass(frozen=True, eq=False)  # told apart by identity: each is compiled once
class _Rule:
    category: str
    label: str
    pattern: re.Pattern[str]


def _translate(phrase: str) -> str:
    out: list[str] = []
    position = 0
    while position < len(phrase):
        char = phrase[position]
        if char == " ":
            out.append(r"[\s\-]+")
        elif char == "*":
            out.append(r"\w*")
        elif char == "-":
            out.append(r"[\s\-]?")
        elif char == "'":
            out.append("'?")
        elif char == ",":
            out.append(",?")
        elif char == "{":
            end = phrase.index("}", position)
            inner = phrase[position + 1:end]
            # `kredīt{s|u}` nests one level: find the closing brace of the outer group.
            while inner.count("{") > inner.count("}"):
                end = phrase.index("}", end + 1)
                inner = phrase[position + 1:end]
            out.append("(?:" + "|".join(_translate(alt) for alt in _split_alternatives(inner)) + ")")
            position = end
        else:
            out.append(re.escape(char))
        position += 1
    return "".join(out)


def _split_alternatives(inner: str) -> list[str]:
    alternatives, depth, start = [], 0, 0
    for index, char in enumerate(inner):
        depth += (char == "{") - (char == "}")
        if char == "|" and depth == 0:
            alternatives.append(inner[start:index])
            start = index + 1
    alternatives.append(inner[start:])
    return alternatives


def _first_letters(phrase: str) -> set[str]:
    """The keys a phrase is indexed by: the first (up to six) letters of the words it can start with."""
    if phrase.startswith("{"):
        end = phrase.index("}")
        return {key for alt in _split_alternatives(phrase[1:end]) for key in _first_letters(alt + phrase[end + 1:])}
    literal = re.match(r"\w*", phrase)
    key = literal.group()[:_KEY] if literal else ""
    if not key:
        raise ValueError(f"a screening phrase must start with a letter or digit: {phrase!r}")
    return {key}


def _compile_rules() -> dict[str, tuple[_Rule, ...]]:
    index: dict[str, list[_Rule]] = {}
    seen: dict[str, str] = {}
    for category, phrases in _PHRASES.items():
        for phrase in phrases:
            folded = _fold(phrase)
            if folded in seen:
                raise ValueError(f"screening phrase {phrase!r} is {seen[folded]!r} without diacritics: list it once")
            seen[folded] = phrase
            rule = _Rule(category, phrase, re.compile(_translate(folded) + r"(?!\w)"))
            for key in _first_letters(folded):
                index.setdefault(key, []).append(rule)
    for category, patterns in _PATTERNS.items():
        for label, pattern, keys in patterns:
            rule = _Rule(category, label, re.compile(pattern))
            for key in keys:
                index.setdefault(key, []).append(rule)
    unknown = {rule.category for rules in index.values() for rule in rules} - set(CATEGORIES)
    if unknown:
        raise ValueError(f"screening rules name unknown categories: {sorted(unknown)}")
    return {key: tuple(rules) for key, rules in index.items()}


_RULES = _compile_rules()

# --- results -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """A prohibited-content match: sends the campaign to staff review with it attached."""

    category: str
    matched: str  # the text as written (or the link), at most 200 characters
    where: str  # subject, preheader, html_body, text_body or link
    rule: str  # the phrase, pattern or domain of the category's list that matched


@dataclass(frozen=True)
class Refusal:
    """Content that hides or neutralises the unsubscribe link or the footer: refused outright."""

    reason: str  # a sentence for the author
    where: str
    matched: str  # the offending snippet, at most 200 characters


@dataclass(frozen=True)
class Screening:
    matches: tuple[Match, ...]
    refusals: tuple[Refusal, ...]

    def together(self, other: Screening) -> Screening:
        """Both screenings' matches and refusals, each once (a source and its rendering find much the same)."""
        return Screening(matches=tuple(dict.fromkeys(self.matches + other.matches))[:MAX_MATCHES],
                         refusals=tuple(dict.fromkeys(self.refusals + other.refusals))[:MAX_REFUSALS])

    @property
    def flagged(self) -> bool:
        """Staff must review it (PRODUCT.md, "Content and industries")."""
        return bool(self.matches)

    @property
    def refused(self) -> bool:
        """It cannot be queued at all until the author fixes it (PRODUCT.md, "Every message")."""
        return bool(self.refusals)


# --- text --------------------------------------------------------------------------------------------------------


def _text_matches(text: _Folded, where: str, starts_before: int | None = None) -> Iterator[Match]:
    """The rules matching at the start of a word of the folding, then of its respelled reading where that differs
    (each match shown as written); only matches starting before `starts_before` when given."""
    limit = len(text.folded) if starts_before is None else starts_before
    done: set[_Rule] = set()
    yield from _rule_matches(text.folded, [(0, limit)], None, text, where, limit, done)
    respelled = text.respelled()
    if respelled is not None:
        yield from _rule_matches(respelled.folded, respelled.windows, respelled, text, where, limit, done)


def _rule_matches(reading: str, windows: list[tuple[int, int]], respelled: _Respelled | None, text: _Folded,
                  where: str, limit: int, done: set[_Rule]) -> Iterator[Match]:
    """The rules matching at the start of a word in the windows of a reading: only those indexed by the word's
    first letters are tried, and each rule is reported once (where it first matches) for a text: screening
    keeps one match per rule and part."""
    candidates: dict[str, tuple[_Rule, ...]] = {}  # by a word's first letters, for this text
    for low, high in windows:
        for word in _WORD.finditer(reading, low, high):
            start = word.start()
            if start == low and low and _WORD.match(reading, low - 1):
                continue  # the window begins inside this word
            letters = reading[start:start + _KEY]
            rules = candidates.get(letters)
            if rules is None:
                rules = candidates[letters] = tuple(
                    rule for size in range(1, _KEY + 1) for rule in _RULES.get(letters[:size], ()))
            for rule in rules:
                found = rule.pattern.match(reading, start)
                if found and rule not in done and not _NEGATED.search(reading, max(0, start - 16), start):
                    first, last = (start, found.end()) if respelled is None else respelled.span(start, found.end())
                    if first < limit:
                        done.add(rule)
                        yield Match(rule.category, _snippet(text.written(first, last)), where, rule.label)


def _text_urls(text: str) -> Iterator[str]:
    """The URLs written in a text, with or without a scheme ("https://bit.ly/x", "bit.ly/x", "www.x.com")."""
    for token in text.split():
        if "." not in token:
            continue
        scheme = _HTTP_IN.search(token)
        token = token[scheme.start():] if scheme else token.lstrip("([<{\"'")
        token = token.rstrip(".,;:!?)]}>\"'")
        if "@" in token.partition("/")[0] or not (scheme or _BARE_HOST.match(token)):
            continue  # an email address, or a word with a dot
        yield token


# --- links -------------------------------------------------------------------------------------------------------

_FULL_STOPS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})  # IDNA reads them as "."
_URL_SEPARATORS = str.maketrans("/_+=&", "     ")  # between the words of a path or query
_HOST_SEPARATORS = str.maketrans(".-_", "   ")
_DIGITS = re.compile(r"\d+")


def _split_url(url: str) -> tuple[str, SplitResult] | None:
    # Browsers drop tabs and line breaks from URLs and read backslashes and missing slashes in http(s) URLs as
    # slashes, and map a host's characters as IDNA does (fullwidth letters, ideographic full stops) after
    # decoding its percent escapes: the host screened is the one a browser would open.
    url = unicodedata.normalize("NFKC", _INVISIBLE.sub("", url)).translate(_FULL_STOPS)
    url = _HTTP_PREFIX.sub(lambda m: m.group(1) + "://", _URL_JUNK.sub("", url).strip().replace("\\", "/"))
    if url.startswith("//"):
        url = "http:" + url
    elif not _SCHEME.match(url):
        if not _BARE_HOST.match(url):
            return None
        url = "http://" + url
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    host = unicodedata.normalize("NFKC", unquote(host)).translate(_FULL_STOPS).lower()
    return host.rstrip("."), parts


def _link_matches(url: str) -> Iterator[Match]:
    split = _split_url(url)
    if split is None:
        return
    host, parts = split
    matched = _URL_JUNK.sub("", url).strip()[:SNIPPET]
    labels = host.split(".")
    listed = ""
    for index in range(len(labels) - 1):
        domain = ".".join(labels[index:])
        category = _DOMAINS.get(domain)
        if category:
            listed = category
            yield Match(category, matched, "link", domain)
            break
        if domain == "udemy.com" and _UDEMY_AFFILIATE.search(parts.query):
            yield Match("affiliate", matched, "link", "udemy.com with a coupon or affiliate code")
            break
    if _AMAZON.search(host) and _AMAZON_TAG.search(parts.query):
        yield Match("affiliate", matched, "link", "amazon with an Associates tag=")
    # "invoice.exe" written in a text reads as a host name to `_text_urls`: no top-level domain is an executable's.
    executable = _EXECUTABLE.search(parts.path) or _EXECUTABLE.search(host)
    if executable:
        yield Match("malware", matched, "link", f"link to an executable file ({executable.group().lower()})")
    # Its path, query and fragment as words (a derived text part shows a link's path, not what its escapes say):
    # "/online-casino", "?q=online+casino" and "?q=online%20casino" read alike.
    words = " ".join((unquote(parts.path), unquote_plus(parts.query), unquote(parts.fragment)))
    for found in _text_matches(_Folded(_INVISIBLE.sub("", words.translate(_URL_SEPARATORS))), "link"):
        yield Match(found.category, matched, "link", found.rule)
    # Its host's labels as words, apart from the path: a reader clicking "Claim your gift" lands on
    # online-casino.example or viagra4less.example all the same. A match may end in the top-level label
    # ("online.casino"), not lie in it alone.
    for words in _host_words(host):
        for found in _text_matches(_Folded(words), "link", starts_before=words.rfind(" ") + 1):
            if found.category != listed:
                yield Match(found.category, matched, "link", found.rule)
    # A label written as one word ("onlinecasino") read as two where its first part is a phrase's first word.
    for label in labels[:-1]:
        for category, rule in _compound_matches(label):
            if category != listed:
                yield Match(category, matched, "link", rule)


def _first_words() -> frozenset[str]:
    """The first words of the phrases of more than one word, as folded (a stem's letters without its `*`)."""
    words: set[str] = set()
    for phrases in _PHRASES.values():
        for phrase in phrases:
            for variant in _variants_of(_fold(phrase)):
                first, space, _ = variant.partition(" ")
                if space and first.rstrip("*").isalpha():
                    words.add(first.rstrip("*"))
    return frozenset(words)


def _variants_of(phrase: str) -> list[str]:
    """A phrase with its first `{...}` group written out as each alternative (enough to reach its first words)."""
    if not phrase.startswith("{"):
        return [phrase]
    end = phrase.index("}")
    inner = phrase[1:end]
    while inner.count("{") > inner.count("}"):
        end = phrase.index("}", end + 1)
        inner = phrase[1:end]
    return [alternative + phrase[end + 1:] for alternative in _split_alternatives(inner)]


_FIRST_WORDS = _first_words()
_LONGEST_FIRST_WORD = max(map(len, _FIRST_WORDS))


@lru_cache(maxsize=4096)
def _compound_matches(label: str) -> tuple[tuple[str, str], ...]:
    """The phrases a host label written as one word forms when split after a phrase's first word, only those
    made across that split (so "sporno" does not read as "s porno": "porn*" is one word). At most one split per
    first word it starts with: a label costs a few readings, not one per letter."""
    if not label.isalpha() or len(label) < 6:
        return ()
    found: dict[tuple[str, str], None] = {}
    for size in range(2, min(len(label) - 1, _LONGEST_FIRST_WORD + 1)):
        if label[:size] not in _FIRST_WORDS:
            continue
        for match in _text_matches(_Folded(f"{label[:size]} {label[size:]}"), "link"):
            if " " in match.matched:
                found[(match.category, match.rule)] = None
    return tuple(found)


def _host_words(host: str) -> list[str]:
    """A host's labels as words: split at dots and hyphens, and once more at digits ("viagra4less", "888casino")."""
    words = " ".join(host.translate(_HOST_SEPARATORS).split())
    apart = " ".join(_DIGITS.sub(" ", words).split())
    return [words] if apart == words else [words, apart]


# --- CSS ---------------------------------------------------------------------------------------------------------

_Colour = tuple[int, int, int, float]
# CSS Color 4's named colours (a rule writing `color:floralwhite` is as white as #fff).
_NAMED_HEX = """
aliceblue f0f8ff antiquewhite faebd7 aqua 00ffff aquamarine 7fffd4 azure f0ffff beige f5f5dc bisque ffe4c4
black 000000 blanchedalmond ffebcd blue 0000ff blueviolet 8a2be2 brown a52a2a burlywood deb887 cadetblue 5f9ea0
chartreuse 7fff00 chocolate d2691e coral ff7f50 cornflowerblue 6495ed cornsilk fff8dc crimson dc143c cyan 00ffff
darkblue 00008b darkcyan 008b8b darkgoldenrod b8860b darkgray a9a9a9 darkgreen 006400 darkgrey a9a9a9
darkkhaki bdb76b darkmagenta 8b008b darkolivegreen 556b2f darkorange ff8c00 darkorchid 9932cc darkred 8b0000
darksalmon e9967a darkseagreen 8fbc8f darkslateblue 483d8b darkslategray 2f4f4f darkslategrey 2f4f4f
darkturquoise 00ced1 darkviolet 9400d3 deeppink ff1493 deepskyblue 00bfff dimgray 696969 dimgrey 696969
dodgerblue 1e90ff firebrick b22222 floralwhite fffaf0 forestgreen 228b22 fuchsia ff00ff gainsboro dcdcdc
ghostwhite f8f8ff gold ffd700 goldenrod daa520 gray 808080 green 008000 greenyellow adff2f grey 808080
honeydew f0fff0 hotpink ff69b4 indianred cd5c5c indigo 4b0082 ivory fffff0 khaki f0e68c lavender e6e6fa
lavenderblush fff0f5 lawngreen 7cfc00 lemonchiffon fffacd lightblue add8e6 lightcoral f08080 lightcyan e0ffff
lightgoldenrodyellow fafad2 lightgray d3d3d3 lightgreen 90ee90 lightgrey d3d3d3 lightpink ffb6c1
lightsalmon ffa07a lightseagreen 20b2aa lightskyblue 87cefa lightslategray 778899 lightslategrey 778899
lightsteelblue b0c4de lightyellow ffffe0 lime 00ff00 limegreen 32cd32 linen faf0e6 magenta ff00ff maroon 800000
mediumaquamarine 66cdaa mediumblue 0000cd mediumorchid ba55d3 mediumpurple 9370db mediumseagreen 3cb371
mediumslateblue 7b68ee mediumspringgreen 00fa9a mediumturquoise 48d1cc mediumvioletred c71585
midnightblue 191970 mintcream f5fffa mistyrose ffe4e1 moccasin ffe4b5 navajowhite ffdead navy 000080
oldlace fdf5e6 olive 808000 olivedrab 6b8e23 orange ffa500 orangered ff4500 orchid da70d6 palegoldenrod eee8aa
palegreen 98fb98 paleturquoise afeeee palevioletred db7093 papayawhip ffefd5 peachpuff ffdab9 peru cd853f
pink ffc0cb plum dda0dd powderblue b0e0e6 purple 800080 rebeccapurple 663399 red ff0000 rosybrown bc8f8f
royalblue 4169e1 saddlebrown 8b4513 salmon fa8072 sandybrown f4a460 seagreen 2e8b57 seashell fff5ee
sienna a0522d silver c0c0c0 skyblue 87ceeb slateblue 6a5acd slategray 708090 slategrey 708090 snow fffafa
springgreen 00ff7f steelblue 4682b4 tan d2b48c teal 008080 thistle d8bfd8 tomato ff6347 turquoise 40e0d0
violet ee82ee wheat f5deb3 white ffffff whitesmoke f5f5f5 yellow ffff00 yellowgreen 9acd32
""".split()
_NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    name: (int(hex_digits[0:2], 16), int(hex_digits[2:4], 16), int(hex_digits[4:6], 16))
    for name, hex_digits in zip(_NAMED_HEX[0::2], _NAMED_HEX[1::2], strict=True)}
_WHITE: _Colour = (255, 255, 255, 1.0)
_UNKNOWN: _Colour = (0, 0, 0, -1.0)  # a background image: never "the same colour" as text
# A colour screening cannot read (lab(), oklch(), color(), color-mix(), a system colour, calc() or var() in it):
# as text, it may be the background's; as a background or a shadow, it is drawn.
_UNREADABLE: _Colour = (0, 0, 0, -2.0)
_COLOUR = re.compile(r"#([0-9a-f]{8}|[0-9a-f]{6}|[0-9a-f]{3,4})\b"
                     r"|\b(rgba?|hsla?|hwb|lab|lch|oklab|oklch|color|color-mix|light-dark|device-cmyk)\(([^()]*)(\)?)"
                     r"|\b(transparent|[a-z]+)\b")
_COLOUR_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?:deg|rad|grad|turn|%)?|none")
_NOT_A_COLOUR = frozenset({"", "inherit", "initial", "unset", "revert", "revert-layer", "currentcolor"})
_LENGTH = re.compile(r"^(-?(?:\d+\.?\d*|\.\d+))([a-z%]*)$")
_PX_PER_UNIT = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 37.8, "mm": 3.78, "q": 0.945,
                "em": 16.0, "rem": 16.0, "ex": 8.0, "ch": 8.0, "%": 0.16, "vw": 6.0, "vh": 6.0, "vmin": 6.0,
                "vmax": 6.0, "rex": 8.0, "rch": 8.0, "cap": 11.0, "rcap": 11.0, "ic": 16.0, "ric": 16.0,
                "lh": 19.2, "rlh": 19.2,
                # the small, large and dynamic viewports' units, and a container's (the window's without one)
                **{f"{kind}{axis}": 6.0 for kind in ("sv", "lv", "dv", "cq")
                   for axis in ("w", "h", "i", "b", "min", "max")}}
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)")
_IMPORTANT = re.compile(r"!\s*important", re.IGNORECASE)
_DARK_MODE = re.compile(r"prefers-color-scheme\s*:\s*dark")
_GROUPING_AT_RULES = ("@media", "@supports", "@container", "@layer", "@document", "@-moz-document", "@scope",
                      "@starting-style")


def _css_unescape(text: str) -> str:
    def one(found: re.Match[str]) -> str:
        if found.group(1):
            code = int(found.group(1), 16)
            return chr(code) if 0 < code < 0x110000 else ""
        return found.group(2)
    return _CSS_ESCAPE.sub(one, text)


def _declarations(text: str) -> dict[str, str]:
    declarations: dict[str, str] = {}
    if "/*" in text:
        text = _CSS_COMMENT.sub("", text)
    if "\\" in text:
        text = _css_unescape(text)
    for part in text.split(";"):
        name, colon, value = part.partition(":")
        if colon and name.strip():
            value = value.strip().lower()
            declarations[name.strip().lower()] = _IMPORTANT.sub("", value).rstrip() if "!" in value else value
    return declarations


def _colour(value: str | None) -> _Colour | None:
    """The first colour written in a value (None: none; `_UNREADABLE`: one screening cannot convert)."""
    if not value:
        return None
    for found in _COLOUR.finditer(value.lower()):
        hex_digits, function, arguments, closed, name = found.groups()
        if hex_digits:
            if len(hex_digits) <= 4:
                hex_digits = "".join(digit * 2 for digit in hex_digits)
            alpha = int(hex_digits[6:8], 16) / 255 if len(hex_digits) == 8 else 1.0
            return int(hex_digits[0:2], 16), int(hex_digits[2:4], 16), int(hex_digits[4:6], 16), alpha
        if function is not None:
            return _functional_colour(function, arguments, closed == ")")
        if name == "transparent":
            return 0, 0, 0, 0.0
        if name in _NAMED_COLOURS:
            red, green, blue = _NAMED_COLOURS[name]
            return red, green, blue, 1.0
    return None


def _functional_colour(function: str, arguments: str, closed: bool) -> _Colour:
    """rgb(), hsl() and hwb(), in the legacy (commas) and modern (spaces, `/ alpha`) forms. Others (lab(), lch(),
    oklab(), oklch(), color(), color-mix()...), relative colours (`from`) and functions inside are unreadable:
    refused where they colour text that could be the footer's, rather than converted."""
    numbers = _COLOUR_NUMBER.findall(arguments)
    if not closed or function not in ("rgb", "rgba", "hsl", "hsla", "hwb") or "from" in arguments or len(numbers) < 3:
        return _UNREADABLE
    alpha = 1.0
    if len(numbers) > 3 and numbers[3] != "none":
        alpha = float(numbers[3][:-1]) / 100 if numbers[3].endswith("%") else float(numbers[3])
    if function.startswith("rgb"):
        channels = [0.0 if n == "none" else float(n[:-1]) * 2.55 if n.endswith("%") else float(n)
                    for n in numbers[:3]]
    else:
        hue = _hue(numbers[0])
        second, third = (_fraction(n) for n in numbers[1:3])
        if function == "hwb":
            if second + third >= 1:
                grey = 255 * second / (second + third)
                channels = [grey, grey, grey]
            else:
                channels = [(value / 255 * (1 - second - third) + second) * 255
                            for value in _hsl_rgb(hue, 1.0, 0.5)]
        else:
            channels = _hsl_rgb(hue, second, third)
    red, green, blue = (min(255, max(0, round(channel))) for channel in channels)
    return red, green, blue, min(1.0, max(0.0, alpha))


def _hue(written: str) -> float:
    found = _ANGLE.match(written)
    return 0.0 if found is None else float(found.group(1)) * _DEGREES_PER_UNIT[found.group(2) or ""]


def _fraction(written: str) -> float:
    """A saturation, lightness, whiteness or blackness: a percentage, or a number out of 100 (modern syntax)."""
    if written == "none":
        return 0.0
    return min(1.0, max(0.0, float(written.rstrip("%")) / 100))


def _hsl_rgb(hue: float, saturation: float, lightness: float) -> list[float]:
    """CSS Color 4's HSL to sRGB, as 0..255 channels."""
    def channel(n: int) -> float:
        k = (n + hue / 30) % 12
        amount = saturation * min(lightness, 1 - lightness)
        return 255 * (lightness - amount * max(-1.0, min(k - 3, 9 - k, 1.0)))
    return [channel(0), channel(8), channel(4)]


def _text_colour(value: str | None) -> _Colour | None:
    """The colour a `color` (or `-webkit-text-fill-color`) declaration gives text (None: none set, it inherits).
    A value screening cannot read as a colour (a system colour, a colour function it does not convert) is
    `_UNREADABLE`, which the checks take as invisible."""
    if value is None or value.strip() in _NOT_A_COLOUR:
        return None
    colour = _colour(value)
    return _UNREADABLE if colour is None else colour


def _same_colour(text: _Colour | None, background: _Colour | None) -> bool:
    if text is None or background is None or text[3] <= 0.05 or background[3] <= 0.05:
        return False
    return sum(abs(a - b) for a, b in zip(text[:3], background[:3], strict=True)) <= 24


def _px(value: str) -> float | None:
    """A length in px (an email's 600px for the window, 16px for an em, a percentage as one of a 16px font), with
    calc(), min(), max(), clamp() and abs() worked out (None: not a length, or one screening cannot work out)."""
    value = value.strip()
    found = _LENGTH.match(value)
    if found:
        return float(found.group(1)) * _PX_PER_UNIT[found.group(2)] if found.group(2) in _PX_PER_UNIT else None
    if _MATH_CALL.fullmatch(value):
        return _MathReader(value, _PX_PER_UNIT["%"]).value()
    return None


# CSS math functions screening works out (calc() of numbers and lengths, min, max, clamp, abs); others (round(),
# sin(), mod()...) it cannot, and in a property that could hide the footer that is refused (`_unreadable`).
_MATH_FUNCTIONS = frozenset({"calc", "-webkit-calc", "-moz-calc", "min", "max", "clamp", "abs"})
_MATH_CALL = re.compile(r"(?:-webkit-|-moz-)?(?:calc|min|max|clamp|abs)\(.*\)", re.DOTALL)
_MATH_TOKEN = re.compile(r"\s*(?:(-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)([a-z%]*)|([a-z-]+)\(|([-+*/(),])|([a-z-]+))")
_MATH_CONSTANTS = {"pi": math.pi, "e": math.e, "infinity": 1e9, "-infinity": -1e9}
_MATH_DEPTH = 32
_MATH_LENGTH = 10_000  # characters of one expression: longer, it has no value (as too deep has none)


class _MathReader:
    """A CSS math expression read as a number of px (or of the percentage's unit): + - * / and parentheses, the
    functions of `_MATH_FUNCTIONS`; units are not type-checked (a wrong expression is no value in a browser
    either). Anything else makes the whole value unknown (None)."""

    def __init__(self, text: str, percent: float) -> None:
        if len(text) > _MATH_LENGTH:
            text = ""  # no value: tokens of a longer one would be read only to find it too deep
        self.tokens = [found.groups() for found in _MATH_TOKEN.finditer(text)]
        self.percent = percent
        self.at = 0
        # a token the pattern skipped (a stray character) makes the expression unknown
        self.complete = sum(len(found.group()) for found in _MATH_TOKEN.finditer(text)) == len(text.rstrip())

    def value(self) -> float | None:
        try:
            result = self._sum(0)
        except (ValueError, IndexError, ZeroDivisionError, OverflowError):
            return None
        return result if self.complete and self.at == len(self.tokens) and math.isfinite(result) else None

    def _next(self) -> tuple[str | None, ...]:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _peek_operator(self) -> str | None:
        return self.tokens[self.at][3] if self.at < len(self.tokens) else None

    def _sum(self, depth: int) -> float:
        if depth > _MATH_DEPTH:
            raise ValueError("too deep")
        total = self._product(depth)
        while self._peek_operator() in ("+", "-"):
            sign = self._next()[3]
            term = self._product(depth)
            total = total + term if sign == "+" else total - term
        return total

    def _product(self, depth: int) -> float:
        total = self._factor(depth)
        while self._peek_operator() in ("*", "/"):
            operator = self._next()[3]
            factor = self._factor(depth)
            total = total * factor if operator == "*" else total / factor
        return total

    def _factor(self, depth: int) -> float:
        if depth > _MATH_DEPTH:
            raise ValueError("too deep")
        number, unit, function, operator, word = self._next()
        if number is not None:
            if unit == "%":
                return float(number) * self.percent
            if unit not in _PX_PER_UNIT:
                raise ValueError(unit)
            return float(number) * _PX_PER_UNIT[unit or ""]
        if word is not None and word in _MATH_CONSTANTS:
            return _MATH_CONSTANTS[word]
        if operator == "(":
            inner = self._sum(depth + 1)
            self._close()
            return inner
        if operator == "-":
            return -self._factor(depth + 1)
        if function is None or function not in _MATH_FUNCTIONS:
            raise ValueError(function or word or operator)
        arguments = [self._sum(depth + 1)]
        while self._peek_operator() == ",":
            self.at += 1
            arguments.append(self._sum(depth + 1))
        self._close()
        if function == "min":
            return min(arguments)
        if function == "max":
            return max(arguments)
        if function == "clamp":
            if len(arguments) != 3:
                raise ValueError("clamp")
            return max(arguments[0], min(arguments[1], arguments[2]))
        if function == "abs":
            return abs(arguments[0])
        if len(arguments) != 1:
            raise ValueError(function)
        return arguments[0]

    def _close(self) -> None:
        if self._next()[3] != ")":
            raise ValueError("unclosed")


def _font_size(declarations: dict[str, str]) -> str | None:
    if "font-size" in declarations:
        return declarations["font-size"]
    if "font" in declarations:
        for token in (part for word in _words(declarations["font"]) for part in
                      ([word] if "(" in word else word.split("/"))):
            if token == "0" or (_LENGTH.match(token) and not token.replace(".", "").isdigit()) or _MATH_CALL.fullmatch(
                    token):
                return token
    return None


def _background(declarations: dict[str, str]) -> _Colour | None:
    if "url(" in declarations.get("background", "") or declarations.get("background-image", "none") != "none":
        return _UNKNOWN
    for name in ("background-color", "background"):
        colour = _colour(declarations.get(name))
        if colour is _UNREADABLE:
            return _UNKNOWN
        if colour is not None and colour[3] > 0.05:
            return colour
    return None


_OFFSETS = ("left", "top", "right", "bottom", "inset", "margin", "margin-left", "margin-top", "text-indent")
_TRANSFORMS = ("transform", "-webkit-transform", "-ms-transform", "-moz-transform")
_MASKS = ("mask", "mask-image", "-webkit-mask", "-webkit-mask-image", "-webkit-mask-box-image", "mask-border",
          "mask-border-source")
_OFFSET_PATH = ("offset", "offset-path")
_CONCEALING_PROPERTIES = frozenset({*_OFFSETS, *_TRANSFORMS, *_MASKS, *_OFFSET_PATH, "display", "mso-hide",
                                    "content-visibility", "opacity", "zoom", "overflow", "overflow-x", "overflow-y",
                                    "contain", "clip", "clip-path", "translate", "scale", "rotate", "filter",
                                    "-webkit-filter", "backface-visibility"})
# Text drawn but not readable or not clickable: letters run together or spread apart, drawn as discs, drawn in a
# blend or a filter that takes their colour to the background's, stroked over, or not reachable by the pointer.
_OBSCURING_PROPERTIES = frozenset({"pointer-events", "letter-spacing", "word-spacing", "-webkit-text-security",
                                   "mix-blend-mode", "filter", "-webkit-filter", "font-size-adjust",
                                   "-webkit-text-stroke", "-webkit-text-stroke-width"})
_SQUEEZED_LETTERS = -3  # px: 12px letters (~6.5px wide) this much closer overlap into a smudge
_SPREAD_LETTERS = 100  # px: a word so spread runs off the page, letter by letter
_SQUEEZED_WORDS = -10  # px: the footer's words written over each other
_SPREAD_WORDS = 600  # px: an email's whole width
_BRIGHTENED = 2.0  # filter:brightness(): the footer's grey (#555) doubled is pale, tripled white
_FLATTENED = 0.2  # filter:contrast(): text and its background the same grey
_THICK_STROKE = 2  # px: a stroke this wide over 12px letters fills them in
_FILTER_FUNCTION = re.compile(r"(brightness|contrast)\(\s*([^)]*)\)")
# Where a value screening cannot work out would be refused (`_unreadable`): the properties that can hide.
_SCREENED_PROPERTIES = frozenset({*_CONCEALING_PROPERTIES, *_OBSCURING_PROPERTIES, "visibility", "font", "font-size",
                                  "color", "-webkit-text-fill-color", "position", "line-height", "height",
                                  "max-height", "min-height", "width", "max-width", "min-width", "block-size",
                                  "max-block-size", "inline-size", "max-inline-size", "-webkit-line-clamp",
                                  "line-clamp", "content", "z-index", "inset-inline", "inset-block",
                                  *(f"{prefix}animation{longhand}" for prefix in ("", "-webkit-", "-moz-", "-o-")
                                    for longhand in ("", "-name", "-duration", "-delay", "-iteration-count",
                                                     "-direction", "-fill-mode", "-play-state", "-timeline"))})
# Functions screening reads in those properties (math ones it works out: `_MATH_FUNCTIONS`); any other (attr(),
# env(), if(), a var() it could not resolve, round()...) makes the value unreadable.
_KNOWN_FUNCTIONS = frozenset({
    "rgb", "rgba", "hsl", "hsla", "hwb", "lab", "lch", "oklab", "oklch", "color", "color-mix", "light-dark", "url",
    "translate", "translatex", "translatey", "translatez", "translate3d", "scale", "scalex", "scaley", "scalez",
    "scale3d", "rotate", "rotatex", "rotatey", "rotatez", "rotate3d", "skew", "skewx", "skewy", "matrix", "matrix3d",
    "perspective", "blur", "brightness", "contrast", "drop-shadow", "grayscale", "hue-rotate", "invert", "opacity",
    "saturate", "sepia", "inset", "circle", "ellipse", "polygon", "path", "rect", "xywh", "linear-gradient",
    "radial-gradient", "conic-gradient", "repeating-linear-gradient", "repeating-radial-gradient",
    "repeating-conic-gradient", "-webkit-linear-gradient", "-webkit-radial-gradient", "image-set",
    "-webkit-image-set", "fit-content", "alpha", "gradient", "ray", "cubic-bezier", "steps", "linear", "scroll",
    "view"})
_FUNCTION_START = re.compile(r"(?<![a-z0-9-])(-?[a-z][a-z0-9-]*+)\(")  # from a word's start: linear on a long one
_PARENTHESIS = re.compile(r"[()]")
_NUMBER = re.compile(r"-?\d*\.?\d+")
_FILTER_OPACITY = re.compile(r"opacity\(\s*([^)]*)\)|alpha\(\s*opacity\s*=\s*(-?\d*\.?\d+)")
_BLUR = re.compile(r"blur\(\s*([^)]*)\)")
_ANGLE = re.compile(r"^(-?(?:\d+\.?\d*|\.\d+))(deg|rad|grad|turn)?$")
_DEGREES_PER_UNIT = {"": 1.0, "deg": 1.0, "rad": 180 / math.pi, "grad": 0.9, "turn": 360.0}
# Drawn at a fifth of its size or less (a scale, a zoom, a turn nearly edge-on to the reader), 16px text is under
# 3.2px high: as unreadable as a tiny font.
_SHRUNK = 0.2
_FAR = 2000  # px: further right or down than any screen is wide or high
_BLURRED = 4  # px: text of 12 to 16px blurred this much cannot be read
_INDENTED = 100  # px: a first line indented this far, with what overflows cut off, shows none of its text
_NO_VALUE = frozenset({"", "none", "initial", "unset", "inherit", "revert", "revert-layer"})
_PAINT_CONTAINMENT = frozenset({"paint", "strict", "content"})


def _far_off(length: str) -> bool:
    """A translation that moves an element off the page: by its own size or more (±100%), by the viewport's (±100vw
    or vh), 100px or more to the left or top (as the offsets), or further right or down than any screen is wide."""
    length = length.strip()
    if length.endswith("%") or length.endswith(("vw", "vh", "vmin", "vmax")):
        amount = _NUMBER.match(length)
        return amount is not None and abs(float(amount.group())) >= 100
    px = _px(length)
    return px is not None and (px <= -100 or px >= _FAR)


def _factor(value: str) -> float | None:
    """A scale factor as written: a number or a percentage (in calc() and the like too)."""
    value = value.strip()
    if _MATH_CALL.fullmatch(value):
        return _MathReader(value, 0.01).value()
    number = _NUMBER.fullmatch(value[:-1] if value.endswith("%") else value)
    if number is None:
        return None
    return float(number.group()) / (100 if value.endswith("%") else 1)


def _shrunk(values: Iterable[str]) -> bool:
    return any(factor is not None and abs(factor) < _SHRUNK for factor in map(_factor, values))


def _edge_on(angle: str) -> bool:
    """A turn about an axis in the page's plane (rotateX, rotateY) that leaves the element (nearly) edge-on to the
    reader: drawn at cos(angle) of its height or width."""
    found = _ANGLE.match(angle.strip())
    if found is None:
        return False
    degrees = float(found.group(1)) * _DEGREES_PER_UNIT[found.group(2) or ""]
    return abs(math.cos(math.radians(degrees))) < _SHRUNK


def _turned_edge_on(axis: list[str], angle: str) -> bool:
    """rotate3d(x, y, z, angle) and `rotate: x y z angle`: a turn about an axis in the page's plane (z = 0)."""
    factors = [_factor(value) for value in axis]
    return (len(factors) == 3 and None not in factors and factors[2] == 0 and any(factors[:2])
            and _edge_on(angle))


def _collapsed(a: float, b: float, c: float, d: float, tx: float, ty: float) -> bool:
    """A matrix that draws the page's plane (nearly) as a line or a point, or moves it far off the page."""
    return (math.hypot(a, b) < _SHRUNK or math.hypot(c, d) < _SHRUNK or abs(a * d - b * c) < _SHRUNK ** 2
            or any(n <= -100 or n >= _FAR for n in (tx, ty)))


def _transform_hides(function: str, arguments: str) -> bool:
    values = _arguments(arguments)
    if function in ("scale", "scalex", "scaley", "scale3d"):
        return _shrunk(values[:2])
    if function in ("translate", "translatex", "translatey", "translate3d"):
        return any(_far_off(length) for length in values[:2])  # across or down, not towards the reader
    if function in ("rotatex", "rotatey"):
        return _edge_on(values[0])
    if function == "rotate3d":
        return len(values) == 4 and _turned_edge_on(values[:3], values[3])
    numbers = [float(n) for n in _NUMBER.findall(arguments)]
    if function == "matrix" and len(numbers) == 6:  # matrix(a, b, c, d, tx, ty)
        return _collapsed(*numbers)
    if function == "matrix3d" and len(numbers) == 16:  # by columns; the page's plane is x, y with w (the last)
        w = numbers[15]
        return w == 0 or _collapsed(*(numbers[i] / w for i in (0, 1, 4, 5, 12, 13)))
    return False


def _transformed_away(declarations: dict[str, str]) -> str | None:
    """A transform that moves an element off the page, shrinks it to a fifth or less, or turns it edge-on, by one
    of its functions or all of them together in 3D (`_composed`) (None: none of these)."""
    for name in _TRANSFORMS:
        transform = declarations.get(name, "")
        if any(_transform_hides(*function) for function in _functions(transform)):
            return f"{name}:{transform}"
    if "translate" in declarations and any(_far_off(length) for length in _words(declarations["translate"])):
        return f"translate:{declarations['translate']}"
    if "scale" in declarations and _shrunk(_words(declarations["scale"])[:2]):
        return f"scale:{declarations['scale']}"
    rotate = declarations.get("rotate", "").split()
    if (len(rotate) == 2 and rotate[0] in ("x", "y") and _edge_on(rotate[1])) or (
            len(rotate) == 4 and _turned_edge_on(rotate[:3], rotate[3])):
        return f"rotate:{declarations['rotate']}"
    individual = [] if declarations.keys().isdisjoint(_INDIVIDUAL) else _individual_transforms(declarations)
    seen_in = declarations.get(_SEEN_IN_PERSPECTIVE)
    perspective = float(seen_in) if seen_in else None
    transforms: list[str | None] = [name for name in _TRANSFORMS if declarations.get(name, "none") not in _NO_VALUE]
    for transform_name in transforms or [None]:
        listed = _top_functions(declarations[transform_name]) if transform_name is not None else []
        if listed is None:
            continue  # what it cannot read, `_unreadable` refuses
        functions = individual + listed
        if functions and (len(functions) > 1 or perspective is not None
                          or any(function in _PROJECTING for function, _ in functions)):
            how = _composed(functions, perspective)
            if how:
                written = "; ".join(f"{n}:{declarations[n]}" for n in ("translate", "rotate", "scale", transform_name)
                                    if n is not None and n in declarations)
                seen = f", in a parent's perspective:{perspective:g}px" if perspective is not None else ""
                return f"{written} ({how}{seen})"
    return None


_FUNCTION_CALL = re.compile(r"([a-z0-9-]+)\((.*)\)", re.DOTALL)


def _top_functions(value: str) -> list[tuple[str, str]] | None:
    """A transform list's functions, (name, arguments), in order (None: something else written in it)."""
    functions = []
    for word in _words(value):
        found = _FUNCTION_CALL.fullmatch(word)
        if found is None:
            return None
        functions.append((found.group(1), found.group(2)))
    return functions


def _individual_transforms(declarations: dict[str, str]) -> list[tuple[str, str]]:
    """`translate`, `rotate` and `scale` as the functions they apply, in the order they apply (before `transform`)."""
    functions: list[tuple[str, str]] = []
    translate = _words(declarations.get("translate", "none"))
    if translate and translate[0] not in _NO_VALUE:
        functions.append(("translate3d", ",".join(translate)))
    rotate = declarations.get("rotate", "none").split()
    if rotate and rotate[0] not in _NO_VALUE:
        if len(rotate) == 2 and rotate[0] in ("x", "y", "z"):
            functions.append((f"rotate{rotate[0]}", rotate[1]))
        elif len(rotate) == 4:
            functions.append(("rotate3d", ",".join(rotate)))
        else:
            functions.append(("rotate", rotate[-1]))
    scale = _words(declarations.get("scale", "none"))
    if scale and scale[0] not in _NO_VALUE:
        functions.append(("scale3d" if len(scale) == 3 else "scale", ",".join(scale)))
    return functions


# The box a whole transform list is judged on in 3D (`_composed`): the footer's, an email's 600px wide and two 12px
# lines high, turned about its centre (transform-origin's default).
_BOX_WIDTH, _BOX_HEIGHT = 600.0, 40.0
# What the element is seen in besides its own perspective(): the smallest `perspective` the message gives any element
# (its parent's applies to its 3D transform), a key of a reading of its declarations no property name can be.
_SEEN_IN_PERSPECTIVE = "(perspective of a parent)"
_PERSPECTIVE = re.compile(r"(?<![\w-])(?:-webkit-|-moz-)?perspective\s*+:\s*+([^;{}\"'<>!]*+)")
_INDIVIDUAL = ("translate", "rotate", "scale")
_TRANSFORMED = frozenset({*_TRANSFORMS, *_INDIVIDUAL})
# The functions judged whole even alone: any other alone, in no parent's perspective, hides only as
# `_transform_hides` reads it (a move towards the reader changes nothing drawn).
_PROJECTING = frozenset({"matrix3d", "perspective"})
_Matrix = list[list[float]]


_OUT_OF_PLANE = re.compile(r"(?:3d|z|rotate[xy])\(")


def _out_of_plane(declarations: dict[str, str]) -> bool:
    """A transform that could take part of the element out of the page's plane, where a perspective changes it (a
    2D one leaves every point in the plane, drawn as it is in any perspective)."""
    rotate = declarations.get("rotate", "").split()
    return (any(_OUT_OF_PLANE.search(declarations.get(name, "")) for name in _TRANSFORMS)
            or len(declarations.get("translate", "").split()) == 3 or (len(rotate) > 1 and rotate[0] != "z"))


def _perspective(html_body: str) -> float | None:
    """The smallest perspective (px) the message gives any element, as an element's parent could have it (None:
    none); below 1px it is 1px, as browsers draw it."""
    if "perspective" not in html_body.lower():
        return None
    depths = [_px(value) for value in _PERSPECTIVE.findall(_css_unescape(html_unescape(html_body)).lower())]
    return min((max(depth, 1.0) for depth in depths if depth is not None), default=None)


def _degrees(angle: str) -> float | None:
    found = _ANGLE.match(angle.strip())
    return None if found is None else float(found.group(1)) * _DEGREES_PER_UNIT[found.group(2) or ""]


def _shift(length: str, size: float) -> float | None:
    """A translation in px, a percentage of the element's own size (`size`)."""
    length = length.strip()
    if length.endswith("%"):
        amount = _NUMBER.fullmatch(length[:-1])
        return None if amount is None else float(amount.group()) * size / 100
    return _px(length)


def _turn(axis: list[float], degrees: float) -> _Matrix:
    """A turn about an axis (x, y, z), as CSS rotate3d() draws it."""
    norm = math.hypot(*axis)
    if norm == 0:
        return _identity()
    x, y, z = (part / norm for part in axis)
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    t = 1 - c
    return [[t * x * x + c, t * x * y - s * z, t * x * z + s * y, 0.0],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x, 0.0],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c, 0.0], [0.0, 0.0, 0.0, 1.0]]


def _identity() -> _Matrix:
    return [[1.0 if row == column else 0.0 for column in range(4)] for row in range(4)]


def _known(values: Iterable[float | None]) -> list[float] | None:
    """The values, if screening could read every one."""
    read = list(values)
    known = [value for value in read if value is not None]
    return known if len(known) == len(read) else None


_AXES = {"translate": (0, 1), "translatex": (0,), "translatey": (1,), "translatez": (2,), "translate3d": (0, 1, 2),
         "scale": (0, 1), "scalex": (0,), "scaley": (1,), "scalez": (2,), "scale3d": (0, 1, 2)}
_TURNS = {"rotate": [0.0, 0.0, 1.0], "rotatez": [0.0, 0.0, 1.0], "rotatex": [1.0, 0.0, 0.0],
          "rotatey": [0.0, 1.0, 0.0]}


def _matrix(function: str, arguments: str) -> _Matrix | None:
    """A transform function as a 4x4 matrix acting on column vectors (None: one screening cannot read)."""
    values = [value.strip() for value in _arguments(arguments)]
    m = _identity()
    if function.startswith("translate") and function in _AXES:
        shifts = _known(_shift(value, (_BOX_WIDTH, _BOX_HEIGHT, 0.0)[axis])
                        for axis, value in zip(_AXES[function], values, strict=False))
        if shifts is None:
            return None
        for axis, shift in zip(_AXES[function], shifts, strict=False):
            m[axis][3] = shift
        return m
    if function in _AXES:
        factors = _known([_factor(value) for value in values])
        if not factors:
            return None
        if function == "scale" and len(factors) == 1:
            factors.append(factors[0])
        for axis, factor in zip(_AXES[function], factors, strict=False):
            m[axis][axis] = factor
        return m
    if function in _TURNS or function == "rotate3d":
        turned_about = _TURNS.get(function) or _known([_factor(value) for value in values[:3]])
        degrees = _degrees(values[-1])
        if turned_about is None or len(turned_about) != 3 or degrees is None:
            return None
        return _turn(turned_about, degrees)
    if function in ("skew", "skewx", "skewy"):
        angles = _known([_degrees(value) for value in values])
        if not angles:
            return None
        x, y = {"skew": (angles[0], angles[-1] if len(angles) > 1 else 0.0), "skewx": (angles[0], 0.0),
                "skewy": (0.0, angles[0])}[function]
        m[0][1], m[1][0] = math.tan(math.radians(x)), math.tan(math.radians(y))
        return m
    if function == "perspective":
        if values[0] == "none":
            return m
        depth = _px(values[0])
        if depth is None:
            return None
        m[3][2] = -1 / max(depth, 1.0)
        return m
    numbers = [float(n) for n in _NUMBER.findall(arguments)]
    if function == "matrix" and len(numbers) == 6:
        a, b, c, d, e, f = numbers
        return [[a, c, 0.0, e], [b, d, 0.0, f], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    if function == "matrix3d" and len(numbers) == 16:  # by columns
        return [[numbers[column * 4 + row] for column in range(4)] for row in range(4)]
    return None


_FLAT_Z = [0.0, 0.0, 1.0, 0.0]  # a matrix's third row, when it moves nothing towards the reader
_NO_PROJECTION = [0.0, 0.0, 0.0, 1.0]  # its fourth, when it has no perspective


def _times(a: _Matrix, b: _Matrix) -> _Matrix:
    return [[r0 * b[0][column] + r1 * b[1][column] + r2 * b[2][column] + r3 * b[3][column] for column in range(4)]
            for r0, r1, r2, r3 in a]


def _composed(functions: list[tuple[str, str]], perspective: float | None) -> str | None:
    """What a whole transform list (seen in a parent's `perspective`) does to the footer's box: drawn (partly)
    behind the reader, where nothing is drawn (a translateZ past the perspective, a matrix3d whose w is 0 or less),
    at a fifth of its size or less, or far off the page (None: none of these, or a function it cannot read)."""
    read = [_matrix(*function) for function in functions]
    steps = [step for step in read if step is not None]
    if len(steps) < len(read):
        return None
    if perspective is None and all(step[3] == _NO_PROJECTION and step[2] == _FLAT_Z and step[0][2] == step[1][2] == 0
                                   for step in steps):
        # All in the page's plane: 2D, six numbers (a b c d e f, as matrix()) each.
        a, b, c, d, e, f = 1.0, 0.0, 0.0, 1.0, 0.0, 0.0
        for step in steps:
            (a2, c2, _, e2), (b2, d2, _, f2) = step[0], step[1]
            a, b, c, d, e, f = (a * a2 + c * b2, b * a2 + d * b2, a * c2 + c * d2, b * c2 + d * d2,
                                a * e2 + c * f2 + e, b * e2 + d * f2 + f)
        return "drawn at a fifth of its size or less, or off the page" if _collapsed(a, b, c, d, e, f) else None
    m = _identity()
    if perspective is not None:
        m[3][2] = -1 / perspective
    for step in steps:
        m = _times(m, step)
    half_width, half_height = _BOX_WIDTH / 2, _BOX_HEIGHT / 2
    corners: list[tuple[float, float]] = []
    for x, y in ((-half_width, -half_height), (half_width, -half_height), (half_width, half_height),
                 (-half_width, half_height), (0.0, 0.0)):
        w = m[3][0] * x + m[3][1] * y + m[3][3]
        if w <= 1e-6:
            return "(partly) behind the reader, where nothing is drawn"
        corners.append(((m[0][0] * x + m[0][1] * y + m[0][3]) / w, (m[1][0] * x + m[1][1] * y + m[1][3]) / w))
    top, right, bottom, left = (math.dist(corners[i], corners[(i + 1) % 4]) for i in range(4))
    area = abs(sum(corners[i][0] * corners[(i + 1) % 4][1] - corners[(i + 1) % 4][0] * corners[i][1]
                   for i in range(4))) / 2
    if (max(top, bottom) < _SHRUNK * _BOX_WIDTH or max(left, right) < _SHRUNK * _BOX_HEIGHT
            or area < _SHRUNK ** 2 * _BOX_WIDTH * _BOX_HEIGHT):
        return "drawn at a fifth of its size or less"
    if any(n <= -100 or n >= _FAR for n in corners[4]):
        return "moved off the page"
    return None


def _clipped(declarations: dict[str, str], across: bool) -> str | None:
    """What cuts off content overflowing the element across the page (`across`) or down it: overflow:hidden or
    clip on that axis (overflow's first value is across, its last down), or paint containment, which clips as
    overflow:clip does (None: nothing; overflow-x:hidden alone makes a box one scrolls down instead)."""
    overflow = declarations.get("overflow", "").split() or [""]
    value = declarations.get("overflow-x" if across else "overflow-y") or overflow[0 if across else -1]
    if value in _CLIPPED:
        return f"overflow:{value}"
    if not _PAINT_CONTAINMENT.isdisjoint(declarations.get("contain", "").split()):
        return f"contain:{declarations['contain']}"
    return None


def _concealing(declarations: dict[str, str], obscuring: bool = True) -> str | None:
    """What hides an element with all its content, whatever the content's own style says (None: nothing); with
    `obscuring`, what leaves its text unreadable or unclickable too (`_obscuring`)."""
    if declarations.keys().isdisjoint(_SCREENED_PROPERTIES):
        return None
    unreadable = _unreadable(declarations)
    if unreadable:
        return unreadable
    if obscuring and not declarations.keys().isdisjoint(_OBSCURING_PROPERTIES):
        obscured = _obscuring(declarations)
        if obscured:
            return obscured
    if declarations.keys().isdisjoint(_CONCEALING_PROPERTIES):
        return None
    get = declarations.get
    if get("display") == "none":
        return "display:none"
    if get("mso-hide") == "all":
        return "mso-hide:all"
    if get("content-visibility") == "hidden":
        return "content-visibility:hidden"
    if "opacity" in declarations:
        opacity = _factor(get("opacity", ""))
        if opacity is not None and opacity <= 0.05:
            return f"opacity:{get('opacity')}"
    if "zoom" in declarations and _shrunk([get("zoom", "")]):
        return f"zoom:{get('zoom')}"
    clipped = _clipped(declarations, across=False) or _clipped(declarations, across=True)
    if clipped:
        for name in ("height", "max-height", "width", "max-width", "line-height"):
            value = get(name, "")
            length = _px(value) if value else None
            if name == "line-height" and value[-1:].isdigit() and length:
                continue  # a bare number multiplies the font size: only 0 hides
            if length is not None and length <= 1:
                return f"{name}:{get(name)} with {clipped}"
    indent = get("text-indent", "")
    across = _clipped(declarations, across=True) if indent else None
    if across and ((_factor(indent) or 0) >= 1 if indent.endswith("%") else (_px(indent) or 0) >= _INDENTED):
        return f"text-indent:{indent} with {across}"  # the first line pushed past the edge that cuts it off
    if "rect(" in get("clip", ""):
        return f"clip:{get('clip')}"
    if get("clip-path", "none") != "none":
        return f"clip-path:{get('clip-path')}"
    for name in _MASKS:
        if get(name, "none") not in _NO_VALUE:
            return f"{name}:{get(name)}"
    transformed = _transformed_away(declarations)
    if transformed:
        return transformed
    for name in ("filter", "-webkit-filter"):
        for amount, percent in _FILTER_OPACITY.findall(get(name, "")):  # opacity(0), opacity(0%), alpha(opacity=0)
            level = _px(amount.rstrip("%") if amount else percent)
            if level is not None and (level / 100 if not amount or amount.endswith("%") else level) <= 0.05:
                return f"{name}:{get(name)}"
        if any((_px(radius.strip() or "0") or 0) >= _BLURRED for radius in _BLUR.findall(get(name, ""))):
            return f"{name}:{get(name)}"
    for name in _OFFSETS:
        value = get(name, "")
        if value and any((px := _px(token)) is not None and (px <= -100 or px >= _FAR) for token in _words(value)):
            return f"{name}:{value}"
    for name in _OFFSET_PATH:
        if get(name, "none") not in _NO_VALUE:
            return f"{name}:{get(name)}"  # moved along a path, anywhere
    if get("backface-visibility") == "hidden" and any(
            get(name, "none") not in _NO_VALUE for name in (*_TRANSFORMS, "rotate")):
        return f"backface-visibility:hidden with {next(n for n in (*_TRANSFORMS, 'rotate') if n in declarations)}"
    return None


def _obscuring(declarations: dict[str, str]) -> str | None:
    """What leaves an element's text drawn but unreadable or unclickable (None: nothing)."""
    get = declarations.get
    if get("pointer-events") == "none":
        return "pointer-events:none (nothing in it can be clicked)"
    if get("-webkit-text-security", "none") not in _NO_VALUE:
        return f"-webkit-text-security:{get('-webkit-text-security')}"
    for name, squeezed, spread in (("letter-spacing", _SQUEEZED_LETTERS, _SPREAD_LETTERS),
                                   ("word-spacing", _SQUEEZED_WORDS, _SPREAD_WORDS)):
        spacing = _px(get(name, "normal"))
        if spacing is not None and (spacing <= squeezed or spacing >= spread):
            return f"{name}:{get(name)}"
    if get("mix-blend-mode", "normal") not in _NO_VALUE | {"normal"}:
        return f"mix-blend-mode:{get('mix-blend-mode')}"  # screen, lighten...: over a white page, white
    for name in ("filter", "-webkit-filter"):
        value = get(name, "")
        if "url(" in value:
            return f"{name}:{value}"  # an SVG filter can paint anything over the element
        for function, amount in _FILTER_FUNCTION.findall(value):
            level = _factor(amount or "1")
            if level is not None and (level >= _BRIGHTENED if function == "brightness" else level <= _FLATTENED):
                return f"{name}:{value}"
    adjust = get("font-size-adjust", "none")
    if any(float(number) < _SHRUNK for number in _NUMBER.findall(adjust)):
        return f"font-size-adjust:{adjust}"  # letters drawn a fraction of their size
    stroke = get("-webkit-text-stroke-width") or get("-webkit-text-stroke", "")
    if any((px := _px(token)) is not None and px >= _THICK_STROKE for token in _words(stroke)):
        return f"-webkit-text-stroke:{stroke}"
    return None


def _arguments(arguments: str) -> list[str]:
    """A function's comma-separated arguments, those of a function inside (`calc(min(1px, 2px))`) kept whole."""
    if "(" not in arguments:
        return arguments.split(",")
    parts = [""]
    depth = 0
    for char in arguments:
        if char == "," and depth == 0:
            parts.append("")
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        parts[-1] += char
    return parts


def _words(value: str) -> list[str]:
    """A value's space-separated parts, a function call (`calc(1px + 2px)`) one part."""
    parts: list[str] = []
    depth = 0
    for word in value.split():
        if depth > 0 and parts:
            parts[-1] += f" {word}"
        else:
            parts.append(word)
        depth = max(0, depth + word.count("(") - word.count(")"))
    return parts


# Custom properties (`--x: none`) wherever the message sets them, and var() read as each value it could take.
# Only where a name starts, and without backtracking: linear on a long run of dashes.
_CUSTOM_PROPERTY = re.compile(r"(?<![\w-])(--[\w-]++)\s*+:\s*+([^;{}\"'<>]*+)")
_VARIANTS = 32  # readings of one rule's declarations with var(); more: unreadable
_VAR_DEPTH = 8  # var() in a custom property's value in another's...: deeper, unreadable
_UNRESOLVED = "var(unresolved)"  # what `_unreadable` refuses


def _custom_properties(html_body: str) -> dict[str, set[str]]:
    """Every value each custom property is given anywhere in the message (style sheets and style attributes,
    escapes and character references undone): which elements get which is not worked out, so a var() is read as
    any of them."""
    custom: dict[str, set[str]] = {}
    if "--" not in html_body:
        return custom
    for name, value in _CUSTOM_PROPERTY.findall(_css_unescape(html_unescape(html_body)).lower()):
        value = _IMPORTANT.sub("", value).strip()
        if value:
            custom.setdefault(name, set()).add(value)
    return custom


def _substituted(value: str, custom: dict[str, set[str]], depth: int = 0) -> list[str] | None:
    """The values a declaration's value could take with its var()s substituted: each value set for the property,
    else its fallback (None: too many or too deep to read)."""
    at = value.find("var(")
    if at < 0:
        return [value]
    if depth > _VAR_DEPTH:
        return None
    level, end = 1, at + 4
    while end < len(value) and level:
        level += {"(": 1, ")": -1}.get(value[end], 0)
        end += 1
    name, comma, fallback = value[at + 4:end - 1 if level == 0 else end].partition(",")
    options = sorted(custom.get(name.strip(), ()))
    if comma:
        options.append(fallback.strip())
    if not options:
        return ["unset"]  # no value anywhere and no fallback: the declaration is ignored
    readings: list[str] = []
    for option in options:
        deeper = _substituted(value[:at] + option + value[end:], custom, depth + 1)
        if deeper is None or len(readings) + len(deeper) > _VARIANTS:
            return None
        readings.extend(deeper)
    return readings


def _variants(declarations: dict[str, str], custom: dict[str, set[str]]) -> list[dict[str, str]]:
    """The declarations as each combination of their var()s' values reads them; one that cannot be read has
    `_UNRESOLVED` for its var() values, refused where it could hide the footer."""
    if not any("var(" in value for value in declarations.values()):
        return [declarations]
    # Declarations with one reading are set once in a common base: copying every variant for each declaration
    # would cost the number of declarations squared in a rule of thousands.
    base = dict(declarations)
    choices: list[tuple[str, list[str]]] = []
    count = 1
    for name, value in declarations.items():
        if "var(" not in value or name.startswith("--"):
            continue
        options = _substituted(value, custom)
        if options is None or count * len(options) > _VARIANTS:
            return [{name: _UNRESOLVED if "var(" in value else value for name, value in declarations.items()}]
        if len(options) == 1:
            base[name] = options[0]
        else:
            count *= len(options)
            choices.append((name, options))
    variants = [base]
    for name, options in choices:
        variants = [{**variant, name: option} for variant in variants for option in options]
    return variants


def _functions(value: str) -> Iterator[tuple[str, str]]:
    """The function calls in a value, outer ones before those in their arguments, but none inside a url():
    (name, arguments); a call left unclosed runs to the end."""
    url_end = 0
    ends: dict[int, int] | None = None
    for found in _FUNCTION_START.finditer(value):
        if found.start() < url_end:
            continue
        if ends is None:
            ends, depth = _closing_parentheses(value)
            if depth > _MATH_DEPTH:  # each call's arguments are copied out: calls in calls cost their depth squared
                yield "(calls nested too deep)", ""
                return
        at = ends.get(found.end() - 1)
        end = len(value) if at is None else at
        if found.group(1) == "url":
            url_end = end
        yield found.group(1), value[found.end():end - 1 if at is not None else end]


def _closing_parentheses(value: str) -> tuple[dict[int, int], int]:
    """Where each "(" of a value is closed (just after its ")"; one left open is not there), and how deep they nest,
    in one pass: reading on from each function to its end would read a value of nested calls once per call."""
    ends: dict[int, int] = {}
    opened: list[int] = []
    deepest = 0
    for parenthesis in _PARENTHESIS.finditer(value):
        if parenthesis.group() == "(":
            opened.append(parenthesis.start())
            deepest = max(deepest, len(opened))
        elif opened:
            ends[opened.pop()] = parenthesis.end()
    return ends, deepest


def _unreadable(declarations: dict[str, str]) -> str | None:
    """A property that can hide whose value screening cannot work out: a function it does not know (attr(),
    env(), if(), var() of a property never set...) or math it cannot (None: none)."""
    for name, value in declarations.items():
        if "(" not in value or name not in _SCREENED_PROPERTIES:
            continue
        for function, arguments in _functions(value):
            if function in _MATH_FUNCTIONS:
                if _MathReader(f"{function}({arguments})", _PX_PER_UNIT["%"]).value() is None:
                    return f"{name}:{value} (screening cannot work it out)"
            elif function not in _KNOWN_FUNCTIONS:
                return f"{name}:{value} (screening cannot work it out)"
    return None


_CLIPPED = ("hidden", "clip")
# Sizes that fit the content: none of them cuts any off.
_FITTING = frozenset({"", "auto", "none", "fit-content", "max-content", "min-content", "inherit", "initial", "unset",
                      "revert", "revert-layer"})
_HEIGHTS = ("height", "min-height", "block-size", "min-block-size")
_WIDTHS = ("width", "min-width", "inline-size", "min-inline-size")
_CLIPPING_HEIGHTS = ("height", "max-height", "block-size", "max-block-size", "-webkit-line-clamp", "line-clamp")
_CLIPPING_WIDTHS = ("width", "max-width", "inline-size", "max-inline-size")
_LENGTHS = re.compile(r"(-?(?:\d+\.?\d*|\.\d+))([a-z%]*)")
_VIEWPORT_UNIT = re.compile(r"[sld]?v(?:w|h|i|b|min|max)")


def _lengths(value: str) -> Iterator[tuple[float, str]]:
    """The lengths written in a value (in calc(), min(), max() too), with their units."""
    for number, unit in _LENGTHS.findall(value):
        yield float(number), unit


def _relative(unit: str) -> bool:
    """A percentage (of the containing block) or a viewport unit (of the window)."""
    return unit == "%" or _VIEWPORT_UNIT.fullmatch(unit) is not None


def _full_width(value: str) -> bool:
    """A width as wide as its container or the window (or wider): one the footer, a block, would have anyway."""
    lengths = list(_lengths(value))
    return bool(lengths) and all(_relative(unit) and number >= 100 for number, unit in lengths)


# Across the page, the footer's lines wrap: a width cuts them off only when narrower than its longest word (its
# text at 11-13px: "Unsubscribe", "marketing", ~80px) or when they may not wrap.
_NARROW_PX = 200
_NARROW_PERCENT = 30  # of an email's 600px
_UNWRAPPED = frozenset({"nowrap", "pre"})


def _too_narrow(value: str) -> bool:
    """A width the footer's words may not fit in (any length in it below ~200px, or 30% of its container)."""
    for number, unit in _lengths(value):
        px = None if _relative(unit) else _px(f"{number}{unit}")
        if (number < _NARROW_PERCENT) if _relative(unit) else (px is not None and px < _NARROW_PX):
            return True
    return False


def _clipping(declarations: dict[str, str]) -> str | None:
    """A height or a width of any size that cuts off what does not fit (overflow:hidden, clamped lines, paint
    containment): harmless on an element closed before the footer, hiding on one the footer ends up inside, as it
    goes last (down the page) or may not fit (across it: one that is not the whole width) (None: none)."""
    get = declarations.get
    down = _clipped(declarations, across=False)
    if down:
        for name in _CLIPPING_HEIGHTS:
            if get(name, "") not in _FITTING:
                return f"{name}:{get(name)} with {down}"
    across = _clipped(declarations, across=True)
    if across:
        for name in _CLIPPING_WIDTHS:
            value = get(name, "")
            if value not in _FITTING and not _full_width(value) and (
                    _too_narrow(value) or get("white-space", "") in _UNWRAPPED):
                return f"{name}:{value} with {across}"
    return None


# Presentational width and height attributes, as a browser reads them (HTML's rendering section): the CSS width and
# height of these elements, below any CSS of theirs; on other elements nothing (`<div width=1>`). A number is pixels
# ("1px" reads as 1) or a percentage; a table's or cell's zero is ignored. In Chromium a cell's or table's width cuts
# the footer off when the table's layout is fixed (`table-layout:fixed` with a width): it is judged as the same CSS
# width is, whatever the layout. Their height is only the least they are (content makes a table taller) unless their
# display makes them blocks.
_SIZED_BY_ATTRIBUTES = {"table": True, "td": True, "th": True, "marquee": False}  # whether it is a table's part
_DIMENSION = re.compile(r"[ \t\n\f\r]*+(\d++(?:\.\d++)?)(%?)")
# Displays that leave a table's part one (`table-cell`, `table-row-group`...), whose height is then only the least.
_TABLE_DISPLAYS = frozenset({"table", "cell", "row", "group", "inherit", "initial", "unset", "revert", "layer"})


def _attribute_sizes(tag: str, values: dict[str, str]) -> dict[str, str] | None:
    """The CSS width and height an element's attributes give it (None: none)."""
    table_part = _SIZED_BY_ATTRIBUTES.get(tag)
    if table_part is None:
        return None
    sizes = {}
    for name in ("width", "height"):
        found = _DIMENSION.match(values.get(name, ""))
        if found and not (table_part and float(found.group(1)) == 0):
            size = f"{found.group(1)}{found.group(2) or 'px'}"
            sizes["min-height" if table_part and name == "height" else name] = size
    return sizes or None


def _attribute_clipping(sizes: dict[str, str] | None, declarations: dict[str, str]) -> str | None:
    """What cuts off the footer in an element sized by its attributes (`_attribute_sizes`) and clipped by CSS (its
    style attribute or a rule's), judged as `_clipping` judges the same CSS size (None: nothing)."""
    if not sizes or _clipping(declarations) is not None:
        return None
    if "min-height" in sizes and declarations.get("display", "table").split("-")[-1] not in _TABLE_DISPLAYS:
        sizes = {"height": sizes["min-height"], **sizes}  # a block now, as tall as the attribute says
    clips = _clipping({**sizes, **declarations})
    return clips.replace(":", "=", 1) if clips else None  # as the attribute is written: width=1px


# An element drawn over other content. Fixed to the window, or painting a shadow or outline 1000px wide, it covers
# the page wherever it sits. Absolutely positioned, it is placed in its containing block (its nearest positioned
# ancestor, else the page): as large as that block, or at its bottom, it covers the footer only when the footer is
# inside that block (the page, or an element still open where the footer goes), or when it reaches far beyond it.
# Sticky, it stays in the window while its parent scrolls by: as tall as the window, it covers all of the parent.
# Email builders use none of these over the page (most clients drop them); a scrim or caption over a picture inside
# a positioned element of its own is common.
_DRAWN_ITSELF = frozenset({"img", "video", "iframe", "object", "embed", "svg", "canvas", "input"})
_POSITIONED = frozenset({"relative", "absolute", "fixed", "sticky"})
_HUGE = 1000  # px: a shadow or outline this wide, or a box reaching this far from its block, reaches the footer
_PAGE_WIDE = 600  # px: an email's whole width
_OUTLINE_STYLES = frozenset({"solid", "dotted", "dashed", "double", "groove", "ridge", "inset", "outset", "auto"})
_CSS_FUNCTION = re.compile(r"[a-z-]*\([^)]*\)|#[0-9a-f]+")


def _page_sized(value: str) -> bool:
    """A size that reaches across a page: 100% of its containing block or of the window, or an email's width, in
    calc() and the like too (any of its terms)."""
    return any(number >= 100 if _relative(unit) else number * _PX_PER_UNIT.get(unit, 0) >= _PAGE_WIDE
               for number, unit in _lengths(value))


def _spans(declarations: dict[str, str], sizes: tuple[str, ...], edges: tuple[str, str], inset: str) -> bool:
    if any(declarations.get(name, "auto") != "auto" for name in ("inset", inset)):
        return True
    if all(declarations.get(edge, "auto") != "auto" for edge in edges):
        return True
    return any(_page_sized(declarations.get(name, "")) for name in sizes)


def _escapes(declarations: dict[str, str]) -> bool:
    """An absolutely positioned element reaching far beyond its containing block up or down the page (1000px or
    more, a window's height, past 100% of the block): it covers what follows the block too."""
    for name in (*_HEIGHTS, "top", "bottom", "inset", "inset-block", "margin-top"):
        for number, unit in _lengths(declarations.get(name, "")):
            if unit == "%" and (abs(number) > 100 or (abs(number) == 100 and name not in _HEIGHTS)):
                return True
            if unit != "%" and (abs(number) >= 100 if _relative(unit)
                                else abs(number) * _PX_PER_UNIT.get(unit, 0) >= _HUGE):
                return True
    return False


def _huge_paint(declarations: dict[str, str]) -> str | None:
    """A shadow or an outline 1000px or more wide: it paints over whatever is around the element (None: none)."""
    for name in ("box-shadow", "-webkit-box-shadow"):
        for shadow in re.split(r",(?![^(]*\))", declarations.get(name, "")):
            colour = _colour(shadow)
            if "inset" in shadow.split() or (colour is not None and 0 <= colour[3] <= 0.05):
                continue  # drawn inside the element, or transparent
            if any(abs(number) * _PX_PER_UNIT.get(unit, 0) >= _HUGE
                   for number, unit in _lengths(_CSS_FUNCTION.sub(" ", shadow))):
                return f"{name}:{declarations[name]}"
    outline = declarations.get("outline", "").split()
    style = declarations.get("outline-style") or next((word for word in outline if word in _OUTLINE_STYLES), None)
    colour = _colour(declarations.get("outline-color") or " ".join(outline))
    if style in _OUTLINE_STYLES and not (colour is not None and 0 <= colour[3] <= 0.05):
        widths = _CSS_FUNCTION.sub(" ", declarations.get("outline-width") or " ".join(outline))
        if any(number * _PX_PER_UNIT.get(unit, 0) >= _HUGE for number, unit in _lengths(widths)):
            return f"outline:{declarations.get('outline') or declarations['outline-width']}"
    return None


def _overlay(declarations: dict[str, str], drawn_itself: bool = False) -> tuple[str, str] | None:
    """What draws an element over other content, and how far (None: nothing): ("page", what) wherever it sits;
    ("spans", what) an absolute element as large as its containing block; ("bottom", what) one at the bottom of
    its containing block; ("sticky", what) a sticky one as tall as the window, over its parent as it scrolls by."""
    huge = _huge_paint(declarations)
    if huge:
        return "page", huge
    position = declarations.get("position")
    if position not in ("fixed", "absolute", "sticky"):
        return None
    background = _background(declarations)
    painted = ("an image" if drawn_itself or background is _UNKNOWN else
               f"background {_css_colour(background)}" if background is not None else
               next((f"{name}:{declarations[name]}" for name in ("backdrop-filter", "-webkit-backdrop-filter")
                     if declarations.get(name, "none") != "none"), None))
    if painted is None:
        return None  # nothing drawn: what is under it shows through
    if position == "fixed":
        return "page", f"position:fixed with {painted}"
    if position == "sticky":
        if any(_page_sized(declarations.get(name, "")) for name in _HEIGHTS):
            return "sticky", f"position:sticky as tall as the window with {painted}"
        return None
    if (_spans(declarations, _WIDTHS, ("left", "right"), "inset-inline")
            and _spans(declarations, _HEIGHTS, ("top", "bottom"), "inset-block")):
        return "spans", f"position:absolute over the whole page with {painted}"
    if declarations.get("bottom", "auto") != "auto":
        return "bottom", f"position:absolute at the bottom with {painted}"
    return None


def _tiny_font(declarations: dict[str, str]) -> str | None:
    """A font size too small to read (inherited, so content can set its own again)."""
    size = _font_size(declarations)
    size_px = _px(size) if size else None
    return f"font-size:{size}" if size_px is not None and size_px < 3 else None


def _invisible(declarations: dict[str, str]) -> str | None:
    """visibility:hidden (inherited, so content can set visibility:visible again)."""
    visibility = declarations.get("visibility")
    return f"visibility:{visibility}" if visibility in ("hidden", "collapse") else None


def _invisible_text(text: _Colour | None, background: _Colour | None) -> bool:
    return text is not None and (text[3] <= 0.05 or _same_colour(text, background))


def _hiding(declarations: dict[str, str]) -> str | None:
    """What in these declarations (of one style rule) hides content, as written (None: nothing); what only
    obscures text is `_obscuring`'s."""
    found = _concealing(declarations, obscuring=False) or _invisible(declarations) or _tiny_font(declarations)
    if found:
        return found
    if "-webkit-text-fill-color" in declarations and _invisible_text(
            _text_colour(declarations["-webkit-text-fill-color"]), None):
        return f"-webkit-text-fill-color:{declarations['-webkit-text-fill-color']}"
    if "color" in declarations and _invisible_text(_text_colour(declarations["color"]), _background(declarations)):
        return f"color:{declarations['color']}" + ("" if _background(declarations) is None else
                                                   " on the same background")
    return None


_IMAGE_CONTENT = re.compile(r"(?:url|image-set|-webkit-image-set|image|cross-fade|-webkit-cross-fade|element"
                            r"|[\w-]*gradient)\(")


def _replaced(declarations: dict[str, str]) -> str | None:
    """`content` with an image on an element itself (not its ::before or ::after): browsers draw the image
    instead of everything the element holds (None: no such content)."""
    content = declarations.get("content", "")
    return f"content:{content}" if _IMAGE_CONTENT.search(content) else None


def _worst(readings: list[tuple[dict[str, str], str]]) -> tuple[dict[str, str], str]:
    """Of an element's style read with each value of its var()s and at each lasting moment of its animations, a
    reading that hides, if one does (with when, for an animation)."""
    for declarations, when in readings:
        if (_concealing(declarations) or _invisible(declarations) or _tiny_font(declarations)
                or _clipping(declarations) or _overlay(declarations) or _replaced(declarations)
                or _invisible_text(_text_colour(declarations.get("color")), None)):
            return declarations, when
    return readings[0]


# Animations: an element is drawn as its @keyframes say while one runs, over its own style (not over !important).
# A moment of one that lasts is read as a style of the element: the frame it ends on when it is kept
# (animation-fill-mode forwards or both: a 0.001s animation to opacity:0 hides for good), and every frame when it
# is held (paused, or driven by scrolling: the reader scrolls to the footer at the bottom), repeats forever, or runs
# (with the delay its first frame fills) for `_BRIEF` or more. A banner fading in over a second or two is not a
# hidden footer. @keyframes are read from every <style> in the message, and a name as any of its definitions.
_KEYFRAMES_RULE = re.compile(r"@(?:-webkit-|-moz-|-o-)?keyframes\s++([^\s{;]++)\s*+\{", re.IGNORECASE)
_BRACE = re.compile(r"[{}]")
_ANIMATION_PREFIXES = ("", "-webkit-", "-moz-", "-o-")
_LONGHANDS = ("duration", "delay", "iteration-count", "direction", "fill-mode", "play-state", "timeline")
_ANIMATION_NAMES = frozenset(f"{prefix}animation{name}" for prefix in _ANIMATION_PREFIXES for name in ("", "-name"))
_TIME = re.compile(r"^(-?(?:\d+\.?\d*|\.\d+))(m?s)$")
_DIRECTIONS = frozenset({"normal", "reverse", "alternate", "alternate-reverse"})
_FILL_MODES = frozenset({"none", "forwards", "backwards", "both"})
_PLAY_STATES = frozenset({"running", "paused"})
_EASINGS = frozenset({"linear", "ease", "ease-in", "ease-out", "ease-in-out", "step-start", "step-end"})
_BRIEF = 5.0  # s: a frame that hides shown for less, as the message opens, is a fade-in, not a hidden footer


@dataclass(frozen=True, slots=True)
class _Keyframe:
    offsets: frozenset[float] | None  # 0 (from) to 1 (to); None: one screening does not place ("entry 0%")
    declarations: dict[str, str]


@dataclass(slots=True)
class _Animation:
    name: str
    duration: float | None = 0.0  # s; None: a value screening cannot read
    delay: float | None = 0.0
    count: float | None = 1.0  # math.inf: forever
    direction: str = "normal"
    fill: str = "none"
    paused: bool = False
    timeline: str = "auto"


def _keyframes(html_body: str) -> dict[str, list[_Keyframe]]:
    """The frames of every @keyframes (and its vendor-prefixed forms) in the message's style sheets, by name."""
    found: dict[str, list[_Keyframe]] = {}
    if re.search("keyframes", html_body, re.IGNORECASE) is None:
        return found
    for _, _, content in _style_elements(html_body):
        css = _css_structure(content)
        at = 0
        while (rule := _KEYFRAMES_RULE.search(css, at)) is not None:
            frames = found.setdefault(_css_unescape(rule.group(1)).strip("\"'").lower(), [])
            depth, at, selector = 1, rule.end(), ""
            for brace in _BRACE.finditer(css, rule.end()):
                text, at = css[at:brace.start()], brace.end()
                if brace.group() == "{":
                    depth, selector = depth + 1, text
                    continue
                if depth == 2:
                    kept = ";".join(part for part in text.split(";") if not _IMPORTANT.search(part))  # ignored there
                    frames.append(_Keyframe(_offsets(selector), _declarations(kept)))
                depth -= 1
                if depth == 0:
                    break
    return found


def _offsets(selector: str) -> frozenset[float] | None:
    offsets: set[float] = set()
    for one in selector.split(","):
        one = one.strip().lower()
        percent = _NUMBER.fullmatch(one[:-1]) if one.endswith("%") else None
        if one in ("from", "to"):
            offsets.add(0.0 if one == "from" else 1.0)
        elif percent is not None:
            offsets.add(float(percent.group()) / 100)
        else:
            return None
    return frozenset(offsets)


def _seconds(value: str) -> float | None:
    found = _TIME.match(value.strip())
    return None if found is None else float(found.group(1)) / (1000 if found.group(2) == "ms" else 1)


def _animations(declarations: dict[str, str]) -> list[_Animation]:
    """The animations a style runs: its `animation` shorthands, with their longhands (each a comma-separated list,
    repeated to the number of names) over them."""
    animations: list[_Animation] = []
    for prefix in _ANIMATION_PREFIXES:
        shorthand, names = declarations.get(f"{prefix}animation"), declarations.get(f"{prefix}animation-name")
        if shorthand is None and names is None:
            continue
        listed = [_shorthand(part) for part in _arguments(shorthand)] if shorthand is not None else []
        if names is not None:
            listed = [listed[i] if i < len(listed) else _Animation("") for i in range(len(_arguments(names)))]
            for animation, name in zip(listed, _arguments(names), strict=True):
                animation.name = name.strip().strip("\"'")
        for i, animation in enumerate(listed):
            written = {name: _longhand(declarations.get(f"{prefix}animation-{name}"), i) for name in _LONGHANDS}
            if (duration := written["duration"]) is not None:
                animation.duration = _seconds(duration)
            if (delay := written["delay"]) is not None:
                animation.delay = _seconds(delay)
            if (count := written["iteration-count"]) is not None:
                animation.count = _count(count)
            if (state := written["play-state"]) is not None:
                animation.paused = state == "paused"
            animation.direction = written["direction"] or animation.direction
            animation.fill = written["fill-mode"] or animation.fill
            animation.timeline = written["timeline"] or animation.timeline
        animations.extend(animation for animation in listed if animation.name not in _NO_VALUE)
    return animations


def _longhand(values: str | None, i: int) -> str | None:
    """The i-th animation's value of a longhand's list (repeated as often as there are animations)."""
    if values is None:
        return None
    parts = _arguments(values)
    return parts[i % len(parts)].strip()


def _count(value: str) -> float | None:
    value = value.strip()
    if value == "infinite":
        return math.inf
    return float(value) if _NUMBER.fullmatch(value) else None


def _shorthand(value: str) -> _Animation:
    """One animation of an `animation` shorthand: its first time is the duration, the second the delay; keywords
    for the longhands before the name."""
    animation = _Animation("")
    times = 0
    for word in _words(value):
        time = _seconds(word)
        if time is not None and times < 2:
            if times == 0:
                animation.duration = time
            else:
                animation.delay = time
            times += 1
        elif word == "infinite" or _NUMBER.fullmatch(word):
            animation.count = _count(word)
        elif word in _DIRECTIONS and animation.direction == "normal":
            animation.direction = word
        elif word in _FILL_MODES and animation.fill == "none":
            animation.fill = word
        elif word in _PLAY_STATES:
            animation.paused = word == "paused"
        elif word in _EASINGS or "(" in word:
            continue
        elif not animation.name:
            animation.name = word.strip("\"'")
        else:
            animation.duration = None  # something screening does not read: any frame may last
    return animation


def _lasting(animation: _Animation, frames: list[_Keyframe]) -> tuple[list[_Keyframe], str]:
    """The frames of an animation that last (`_BRIEF` or more, or for good), and why."""
    duration, delay, count = animation.duration, animation.delay, animation.count
    if animation.paused:
        return frames, "held (animation-play-state:paused)"
    if animation.timeline not in ("auto", ""):
        return frames, f"as the reader scrolls (animation-timeline:{animation.timeline})"
    if count == math.inf:
        return frames, "repeated forever"
    filled_before = animation.fill in ("backwards", "both")
    if duration is None or delay is None or count is None or (
            duration * count + (max(delay, 0) if filled_before else 0) >= _BRIEF):
        return frames, f"shown for {_BRIEF:g}s or more"
    if animation.fill not in ("forwards", "both"):
        return [], ""
    if count != int(count):
        return frames, f"kept when it ends midway (animation-fill-mode:{animation.fill})"
    # The frame it ends on: the last iteration's end (or, none run, the first's start), in its direction.
    backwards = animation.direction in ("reverse", "alternate-reverse")
    if animation.direction.startswith("alternate") and count >= 2 and count % 2 == 0:
        backwards = not backwards
    end = (1.0 if count > 0 else 0.0) if not backwards else (0.0 if count > 0 else 1.0)
    return ([frame for frame in frames if frame.offsets is None or end in frame.offsets],
            f"kept when it ends (animation-fill-mode:{animation.fill})")


def _animated(declarations: dict[str, str],
              keyframes: dict[str, list[_Keyframe]]) -> Iterator[tuple[dict[str, str], str]]:
    """The style at each lasting moment of its animations (`_lasting`): its own with the frame's over it, and
    when that is."""
    if declarations.keys().isdisjoint(_ANIMATION_NAMES):
        return
    read: set[tuple[int, str]] = set()
    for animation in _animations(declarations):
        frames = keyframes.get(animation.name.lower())
        if not frames:
            continue
        lasting, why = _lasting(animation, frames)
        for frame in lasting:
            if (id(frame), why) in read:
                continue
            if len(read) == _VARIANTS:
                yield ({**declarations, "animation": "unread()"},  # refused as a value it cannot work out
                       f"(more than {_VARIANTS} lasting frames of animations: screening reads no more)")
                return
            read.add((id(frame), why))
            yield {**declarations, **frame.declarations}, f"in @keyframes {animation.name}, {why}"


# What is no structure of a style sheet: comments (dropped), strings and escaped characters (their braces and
# semicolons blanked: `content:"}"` does not end a rule).
_CSS_STRUCTURE = re.compile(r"/\*.*?(?:\*/|$)|\"(?:[^\"\\\n]|\\.)*\"?|'(?:[^'\\\n]|\\.)*'?|\\[{};]", re.DOTALL)
_NESTED_SELECTORS = 64  # a nested rule's selectors, one per parent selector: more than this reads as `*`
_CSS_DEPTH = 32  # blocks in blocks (@media, nested rules): deeper is unreadable (each level's selector is longer)


def _css_structure(css: str) -> str:
    def blank(found: re.Match[str]) -> str:
        text = found.group()
        if text.startswith("/*"):
            return ""
        return text[0] + re.sub(r"[{};]", " ", text[1:])
    return _CSS_STRUCTURE.sub(blank, css)


@dataclass(slots=True)
class _CssBlock:
    selector: str | None  # a style rule's selector (with its parents': CSS nesting); None: not a style rule
    grouping: bool  # @media, @supports and the like: its rules, and its declarations inside a style rule, apply
    dark_mode: bool
    on_some_screens: bool  # inside @media or the like
    declarations: list[str] = field(default_factory=list)


def _css_rules(css: str) -> Iterator[tuple[str, str, bool, bool]]:
    """(selector, declarations, for dark mode only, inside @media or the like: on some screens only) of the style
    rules of a style sheet, in @media and the like too, and nested in other style rules (CSS nesting: `body { &
    div {...} }` is `body div`; declarations in a nested @media are the enclosing rule's)."""
    css = _css_structure(css)
    stack: list[_CssBlock] = []
    start = 0
    for brace in re.finditer(r"[{}]", css):
        text = css[start:brace.start()]
        start = brace.end()
        if brace.group() == "}":
            if stack:
                block = stack.pop()
                block.declarations.append(text)
                if block.selector is not None:
                    yield block.selector, ";".join(block.declarations), block.dark_mode, block.on_some_screens
            continue
        declarations, _, prelude = text.rpartition(";")
        prelude = prelude.strip()
        if len(stack) >= _CSS_DEPTH:
            raise _Unreadable(f"CSS blocks nested more than {_CSS_DEPTH} deep", prelude)
        parent = stack[-1] if stack else None
        if parent is not None:
            parent.declarations.append(declarations)
        if parent is not None and not parent.grouping and parent.selector is None:
            stack.append(_CssBlock(None, False, False, False))  # inside @font-face, @keyframes...: no rules
        elif prelude.startswith("@"):
            lower = prelude.lower()
            grouping = lower.startswith(_GROUPING_AT_RULES)
            stack.append(_CssBlock(parent.selector if parent is not None and grouping else None, grouping,
                                   (parent is not None and parent.dark_mode) or _DARK_MODE.search(lower) is not None,
                                   True))
        else:
            selector = prelude if parent is None or parent.selector is None else _nested(parent.selector, prelude)
            stack.append(_CssBlock(selector, False, parent is not None and parent.dark_mode,
                                   parent is not None and parent.on_some_screens))


def _nested(parent: str, nested: str) -> str:
    """A nested style rule's selector as a plain one: `&` is the parent rule's selector (as `:is(...)`, any element
    to screening, where the parent's is not a compound at the start), a selector without `&` is inside it."""
    parents = [one.strip() for one in _SELECTOR_LIST.split(parent) if one.strip()]
    selectors: list[str] = []
    for one in _SELECTOR_LIST.split(nested):
        one = one.strip()
        if not one:
            continue
        for outer in parents:
            if "&" not in one:
                selectors.append(f"{outer} {one}")
            elif one.startswith("&") and not re.match(r"&[\w-]", one) and (
                    _COMBINATOR.search(outer) is None or one.count("&") == 1):
                selectors.append(outer + one[1:].replace("&", f":is({outer})"))
            else:
                selectors.append(one.replace("&", f":is({outer})"))
        if len(selectors) > _NESTED_SELECTORS:
            return "*"
    return ", ".join(selectors) or parent


# A comment, an at-keyword (1), a string (3 or 4, 2: inside url()), an unquoted url() (5), escapes as written.
_CSS_TOKEN = re.compile(r"/\*.*?(?:\*/|$)"
                        r"|@((?:[\w-]|\\[0-9a-fA-F]{1,6}\s?|\\.)+)"
                        r"|(url\(\s*)?(?:\"((?:[^\"\\]|\\.)*)(?:\"|$)|'((?:[^'\\]|\\.)*)(?:'|$))"
                        r"|url\(\s*([^)\"'\s]*)", re.DOTALL | re.IGNORECASE)


def _css_reading(css: str) -> tuple[list[str], list[str], list[str]]:
    """What CSS holds besides its rules, escapes undone: its strings (a reader sees those of `content:"..."`; any
    other, a font's name or a selector's value, is read too, at worst sending the campaign to review), the URLs a
    client loads (`url()`, `@import`), and the style sheets it imports."""
    texts: list[str] = []
    urls: list[str] = []
    imports: list[str] = []
    importing = False
    string_end = -1  # where the last string ended: strings with only spaces between them show as one
    for token in _CSS_TOKEN.finditer(css):
        keyword, in_url, double, single, bare = token.groups()
        if keyword is not None:
            importing = _css_unescape(keyword).lower() == "import"
            if importing:
                imports.append("")  # its URL is the string or url() that follows
            continue
        written = double if double is not None else single if single is not None else bare
        if written is None:
            continue  # a comment
        value = _css_unescape(written.replace("\\\n", ""))  # a backslash before a line break continues a string
        if bare is None:
            if texts and not css[string_end:token.start()].strip():
                texts[-1] += value  # content:"casi" "no" shows "casino"
            else:
                texts.append(value)
            string_end = token.end()
        if in_url is not None or bare is not None or importing:
            urls.append(value)
        if importing:
            imports[-1], importing = value, False
    return texts, urls, imports


def _font_css(url: str) -> bool:
    """Google Fonts' style sheets (what email builders link for a web font): @font-face rules of its own, which the
    author cannot write into."""
    split = _split_url(url)
    return split is not None and split[0] == "fonts.googleapis.com"


def _srcset_urls(srcset: str) -> list[str]:
    """The image URLs of a srcset: comma-separated, each with an optional width or density after a space."""
    return [candidate.split()[0] for candidate in srcset.split(",") if candidate.split()]


# --- HTML --------------------------------------------------------------------------------------------------------

_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)  # where delivery puts the footer (render.py)
_UNSUBSCRIBE_HREF = re.compile(r"\s*\{\{\s*unsubscribe_url\s*(?:\|[^}]*)?\}\}\s*")
_UNSUBSCRIBE_WORDING = re.compile(
    r"(?<!\w)(?:unsubscri\w*|opt[\s-]?out|remove\s+me|atrakst(?:iti?es|ieties|isan\w*)|atteikties\s+no"
    r"|atsak(?:ities|ieties|ies)(?:\s+no)?|partraukt\s+(?:abonement\w*|abonesan\w*))(?!\w)")
_WORDING_HINTS = ("unsub", "opt", "remove", "atrakst", "atteik", "atsak", "partraukt", "pārtraukt")


def _says_unsubscribe(text: str) -> bool:
    lower = text.lower()
    return any(hint in lower for hint in _WORDING_HINTS) and _UNSUBSCRIBE_WORDING.search(_fold(text)) is not None


_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
                   "source", "track", "wbr"})
_NOT_DISPLAYED = frozenset({"script", "style", "template", "textarea", "title", "noscript", "noembed", "noframes",
                            "iframe", "object", "select", "option", "datalist", "xmp", "plaintext", "svg", "math",
                            "canvas", "video", "audio", "rp", "meter", "progress"})
# Declarative shadow DOM: a <template> with one of these makes its parent a shadow host, which shows none of its
# own children (the footer Herald adds among them, wherever the template is) without a <slot>.
_SHADOW_ROOT_ATTRIBUTES = ("shadowrootmode", "shadowroot")
_BLOCK = frozenset({"address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "dialog", "div",
                    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
                    "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table",
                    "tbody", "td", "tfoot", "th", "thead", "title", "tr", "ul"})
_CLOSES_P = frozenset({"address", "article", "aside", "blockquote", "details", "dialog", "div", "dl", "fieldset",
                       "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
                       "hgroup", "hr", "main", "menu", "nav", "ol", "p", "pre", "section", "table", "ul"})
_IMPLIES_END = _CLOSES_P | {"li", "dt", "dd", "td", "th", "tr", "tbody", "thead", "tfoot", "option", "optgroup"}
_SCOPE = frozenset({"html", "table", "td", "th", "caption", "template", "object", "applet", "marquee", "button"})
_TABLE_PARTS = frozenset({"tr", "tbody", "thead", "tfoot", "table"})
_LIST_SCOPE = _SCOPE | {"ul", "ol"}
_DL_SCOPE = _SCOPE | {"dl"}
_ROW_SCOPE = frozenset({"table", "tr"})
_TABLE_SCOPE = frozenset({"table"})
# The footer delivery appends: <div style=...><a href=...>Unsubscribe</a><br>Email marketing by Herald</div><img>
_FOOTER_TAGS = frozenset({"div", "a", "br", "img"})
_DOCUMENT = frozenset({"html", "body"})
_IN_HEAD = frozenset({"base", "basefont", "bgsound", "link", "meta", "noscript", "script", "style", "template",
                      "title", "head"})
_CLIPPED_FOOTER_TAGS = frozenset({"div", "a"})  # those of them whose text a height could cut off
# Attributes naming what a client loads or a reader follows (srcset: a list of them).
_LINK_ATTRIBUTES = ("href", "src", "srcset", "action", "formaction", "background", "poster")
_NONE: frozenset[str] = frozenset()

_R_STYLE = ("A <style> rule ({selector}) hides content with {what}, and it could reach the unsubscribe link and "
            "footer Herald adds at the end of the message. Limit it to a class or id of your own (not one on an "
            "element the footer ends up inside); for hidden preview text use the campaign's preheader field.")
_R_UNCLOSED = ("This element hides its content ({what}) and is not closed before the end of the body, so it would "
               "also hide the unsubscribe link and footer Herald adds there. Close it with </{tag}>.")
_R_NOT_DISPLAYED = ("The <{tag}> element is not closed before the end of the body, so the unsubscribe link and "
                    "footer Herald adds there would not be shown. Close it with </{tag}>.")
_R_SHADOW_ROOT = ("A <template> with a {attribute} attribute makes the element it is in a shadow host, which shows "
                  "none of its own content, so the unsubscribe link and footer Herald adds there would not be "
                  "shown. Remove the {attribute} attribute.")
_R_COMMENT = ("An HTML comment (<!--) is not closed before the end of the body, so the unsubscribe link and footer "
              "Herald adds there would be commented out. Close it with -->.")
_R_TAG = ("The body ends inside an unfinished tag (a </body> inside an attribute, or a missing >), so the "
          "unsubscribe link and footer Herald adds there would be swallowed by it. Finish the tag.")
_R_HIDDEN = ("The unsubscribe link or wording is inside an element that hides it ({what}). Unsubscribing must "
             "stay visible: remove the hiding style.")
_R_SAME_COLOUR = ("The unsubscribe link or wording is written in the colour of its background ({what}). "
                  "Unsubscribing must stay visible: use a contrasting colour.")
_R_FOOTER_BACKGROUND = ("The background where Herald adds the footer ({colour}) is the colour of its text (#555555) "
                        "or of its unsubscribe link (#0000ee), so they would not be seen. Use a lighter background "
                        "there, or close the element that sets it before the end of the body.")
# The colours delivery draws the footer's text and link in (render.py, its style attribute).
_FOOTER_TEXT: _Colour = (0x55, 0x55, 0x55, 1.0)
_FOOTER_LINK: _Colour = (0x00, 0x00, 0xEE, 1.0)
_R_FAKE = ("A link that reads as an unsubscribe link goes to {href!r} instead of {{{{ unsubscribe_url }}}}. Link "
           "it to {{{{ unsubscribe_url }}}} (Herald also adds its own unsubscribe link to every message).")
_R_OVERLAY = ("This element is drawn over the page ({what}): it could cover the unsubscribe link and footer Herald "
              "adds at the end of the message. Remove its fixed or sticky position (or its shadow or outline); put "
              "an absolutely positioned element inside one of its own with position:relative, closed before the "
              "end of the body.")
_R_STYLE_OVERLAY = ("A <style> rule ({selector}) draws an element over the page ({what}): it could cover the "
                    "unsubscribe link and footer Herald adds at the end of the message. Remove its fixed or sticky "
                    "position (or its shadow or outline); put what it positions absolutely inside an element of its "
                    "own with position:relative, closed before the end of the body.")
_R_REVERSED = ("Text drawn in another order than it is written ({what}): a reader sees the letters reversed, "
               "screening reads them as stored. Write the text in the order it is read; right-to-left languages "
               "need no override (dir=\"rtl\", direction:rtl and the isolates are fine).")
_OVERRIDES = re.compile("[\u202d\u202e]")  # LEFT-TO-RIGHT and RIGHT-TO-LEFT OVERRIDE
_OVERRIDE_NAMES = {"\u202d": "U+202D LEFT-TO-RIGHT OVERRIDE", "\u202e": "U+202E RIGHT-TO-LEFT OVERRIDE"}
_CSS_OVERRIDE = re.compile(r"(?:bidi|isolate)-override")  # unicode-bidi's values that draw letters reversed
_R_EXTERNAL_CSS = ("An external style sheet ({what}) cannot be screened: its rules could hide the unsubscribe link "
                   "and footer Herald adds at the end of the message. Write the styles into the message (a <style> "
                   "element or style attributes).")


@dataclass(slots=True)
class _Link:
    href: str | None
    start: str
    unsubscribe: bool  # it goes to {{ unsubscribe_url }}
    text: list[str] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Node:
    """An element as a style sheet's selectors see it (its name, classes and ids, parent and previous sibling), and
    the block an absolutely positioned element inside it is placed in. The footer's elements are nodes too."""

    tag: str
    classes: frozenset[str]
    ids: frozenset[str]
    parent: _Node | None
    previous: _Node | None  # the element right before it in its parent
    position: str | None  # as its style attribute sets it
    any_name: bool = False  # template code writes its class or id: it could be any
    footer: bool = False  # an element of the footer Herald appends
    open_at_footer: bool = False  # the footer goes inside it
    positioned: bool = False  # surely positioned (relative, absolute...): the containing block of what is inside
    containing: _Node | None = None  # its nearest positioned ancestor (None: the page)


@dataclass(frozen=True, slots=True)
class _Compound:
    """A compound selector (`div.card#top:hover`) as far as screening reads it: its element name, classes and ids."""

    tag: str | None  # None: any element
    classes: frozenset[str]
    ids: frozenset[str]
    plain: bool  # names only, no attribute, pseudo-class or pseudo-element: it selects every element so named
    generated: bool  # ::before or ::after: a box of its own, inside the element

    def fits(self, node: _Node, surely: bool = False) -> bool:
        """Whether the compound could select the node (`surely`: does select it, but for what the parts screening
        does not read, attributes and pseudo-classes, could rule out)."""
        if self.tag is not None and self.tag != node.tag:
            return False
        if node.any_name and not surely:
            return True
        return self.classes <= node.classes and self.ids <= node.ids


_SELECTOR_ARGUMENT = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_COMBINATOR = re.compile(r"\s*([>+~])\s*|\s+")
_GENERATED = re.compile(r"::?(?:before|after)\b", re.IGNORECASE)
_SIBLINGS_READ = 1000  # previous siblings a `~` looks through before it is taken to match
_SELECTOR_DEPTH = 16  # `:not(:is(...))` and `[...]` in each other: deeper is unreadable


# An attribute selector on the class or id, as builders write them (Stripo's `*[class="gmail-fix"]`): it selects
# only elements of that class or id, as `.gmail-fix` does (of those classes at least, for several), not any element.
_ATTRIBUTE_NAME = re.compile(r"""\[\s*(class|id)\s*(~?=)\s*(?:"([^"]*)"|'([^']*)'|([\w-]+))\s*\]""", re.IGNORECASE)


def _as_class_or_id(found: re.Match[str]) -> str:
    name, operator = found.group(1).lower(), found.group(2)
    words = (found.group(3) if found.group(3) is not None else found.group(4) if found.group(4) is not None
             else found.group(5)).split()
    if not words or not all(re.fullmatch(r"[\w-]+", word) for word in words) or (operator == "~=" and len(words) > 1):
        return found.group()  # left to narrow as any attribute does
    if name == "id":
        return f"#{words[0]}" if len(words) == 1 else found.group()
    return "".join(f".{word}" for word in words)


def _selector(selector: str) -> tuple[list[_Compound], list[str]]:
    """One selector (no commas) as its compounds and the combinators between them (" ", ">", "+", "~"). What is in
    brackets or parentheses (attributes, `:not(...)`) only narrows what a compound selects and is left out."""
    text = _ATTRIBUTE_NAME.sub(_as_class_or_id, selector.strip())
    for _ in range(_SELECTOR_DEPTH + 1):  # a pass for each level of brackets in brackets, from the innermost
        narrower = _SELECTOR_ARGUMENT.sub(lambda m: ":" if m.group().startswith("[") else "", text)
        if narrower == text:
            break
        text = narrower
    else:
        raise _Unreadable(f"a selector with brackets nested more than {_SELECTOR_DEPTH} deep", selector[:200])
    parts = _COMBINATOR.split(text)
    compounds = []
    for part in parts[0::2]:
        tag = re.match(r"[A-Za-z][A-Za-z0-9-]*", part)
        compounds.append(_Compound(
            tag.group().lower() if tag else None, frozenset(re.findall(r"\.([\w-]+)", part)),
            frozenset(re.findall(r"#([\w-]+)", part)), ":" not in part, _GENERATED.search(part) is not None))
    return compounds, [combinator or " " for combinator in parts[1::2]]


class _Names:
    """The names (element names, classes, ids) of some nodes, to ask whether a compound could select one of them."""

    def __init__(self, nodes: Iterable[_Node]) -> None:
        self.tags: set[str] = set()
        self.classes: set[str] = set()
        self.ids: set[str] = set()
        self.any_name = False
        for node in nodes:
            self.tags.add(node.tag)
            self.classes |= node.classes
            self.ids |= node.ids
            self.any_name |= node.any_name

    def could_fit(self, compound: _Compound) -> bool:
        return (compound.tag is None or compound.tag in self.tags) and (self.any_name or (
            compound.classes <= self.classes and compound.ids <= self.ids))


class _NodeIndex:
    """Nodes by their names, to find those a compound could select without reading every node."""

    def __init__(self, nodes: Iterable[_Node]) -> None:
        self.by_name: dict[str, list[_Node]] = {}
        self.any_name: list[_Node] = []
        for node in nodes:
            for key in (node.tag, *(f".{name}" for name in node.classes), *(f"#{name}" for name in node.ids)):
                self.by_name.setdefault(key, []).append(node)
            if node.any_name:
                self.any_name.append(node)

    def selected(self, compound: _Compound) -> Iterator[_Node]:
        key = (next((f"#{name}" for name in compound.ids), None) or next((f".{name}" for name in compound.classes),
                                                                        None) or compound.tag)
        if key is None:
            yield from (node for nodes in self.by_name.values() for node in nodes)  # `*`: any
            return
        yield from (node for node in self.by_name.get(key, ()) if compound.fits(node))
        yield from (node for node in self.any_name if compound.fits(node))


def _positioning(style_sheets: Iterable[str], custom: dict[str, set[str]]) -> tuple[set[_Compound], set[_Compound]]:
    """The compounds whose elements a style sheet surely positions (a rule for them alone, on every screen) and
    those it may leave static (position:static and the like, on some screen): a block that contains what is
    absolutely positioned inside it only when positioned for sure."""
    positions: set[_Compound] = set()
    statics: set[_Compound] = set()
    for css in style_sheets:
        for selector, body, _, nested in _css_rules(css):
            for declarations in _variants(_declarations(body), custom):
                position = declarations.get("position")
                if position is None:
                    continue
                for one in selector.split(","):
                    compounds, _combinators = _selector(one)
                    if position not in _POSITIONED:
                        statics.add(compounds[-1])
                    elif len(compounds) == 1 and compounds[0].plain and not nested:
                        positions.add(compounds[0])
    return positions, statics


def _covers_footer(node: _Node, kind: str, generated: bool, escapes: bool) -> bool:
    """Whether an element (or its ::before or ::after, `generated`) drawn over others as `kind` says (`_overlay`)
    covers the footer: the block it is placed in holds the footer (the page, or an element open there)."""
    if kind == "sticky":
        parent = node if generated else node.parent
        return parent is None or parent.open_at_footer
    block = node if generated and node.positioned else node.containing
    if kind == "bottom":
        return block is not None and block.open_at_footer
    return block is None or block.open_at_footer or escapes


@dataclass(slots=True)
class _Element:
    """An open element and what it passes on to its content (computed once, when it opens)."""

    tag: str
    start: str  # the start tag as written
    hides: str | None  # what of its own hides its content (style, markup, colour; None: nothing)
    bg: _Colour | None  # its own background colour
    classes: frozenset[str]
    ids: frozenset[str]
    # What hides the content at this point, by the element responsible. Concealment (display:none, opacity...)
    # holds whatever the content says; a tiny font and visibility:hidden hold until content sets its own again.
    concealed_by: _Element | None
    tiny_font_by: _Element | None
    invisible_by: _Element | None
    text_colour: _Colour | None  # the text colour inside it (None: the client's default or link colour)
    background: _Colour | None  # the background inside it (None: the page's)
    coloured_by: _Element | None  # the element that set text_colour or background
    node: _Node
    link: _Link | None = None
    clips: str | None = None  # what of its own cuts off content that does not fit (a height with overflow:hidden)
    sizes: dict[str, str] | None = None  # the width and height its attributes give it (`_attribute_sizes`)


# Limits no email builder's output comes near (a long newsletter has a few thousand elements and a few hundred
# style rules): past them a body is refused as unreadable, and screening stops reading it. How deep elements nest
# costs nothing more (`_innermost`).
_ELEMENTS = 20_000
_STYLE_RULES = 5_000
_UNFINISHED_LENGTH = 64_000  # characters after an unfinished comment or tag at the end (`_HtmlReader._finish`)
_UNFINISHED_MARKUP = 100  # "<" after it
_SCOPE_IN_CELL = _SCOPE - {"td", "th", "caption"}  # what a table part's end tag does not close across
_R_UNREADABLE = ("Screening cannot read this body ({what}), so it cannot tell whether the unsubscribe link and "
                 "footer Herald adds would show. No email builder writes such a body: simplify it.")


class _Unreadable(Exception):
    """A body past one of screening's limits: it is refused, and read no further."""

    def __init__(self, what: str, matched: str) -> None:
        super().__init__(what)
        self.what = what
        self.matched = matched


class _HtmlReader(HTMLParser):
    """Reads an HTML body once: its text, its links, and what hides the footer or the unsubscribe link.

    Every event costs the same however deep the document nests (counts of open tags, what each element passes on
    computed when it opens), so a body of thousands of unclosed elements screens in linear time.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[str] = []
        self.refusals: list[Refusal] = []
        self.style_sheets: list[str] = []
        self.stack: list[_Element] = []
        self.open_tags: dict[str, list[int]] = {}  # by tag: the depths its open elements are at, innermost last
        self.elements = 0
        self.rules = 0
        self.open_links: list[_Link] = []
        self.page_bg: _Colour = _WHITE
        self.class_bg: dict[str, _Colour] = {}
        self.at_footer: list[_Element] = []
        self.unfinished = ""  # what the parser still holds where the footer goes: an open comment or tag
        self.nodes: list[_Node] = []
        self.last_child: list[_Node | None] = [None]  # by depth: the last element in the element open there
        # Drawn over others by a style attribute, judged once the style sheets say where each block is:
        # (the element, `_overlay`'s kind and what, the start tag, whether it reaches far beyond its block).
        self.overlays: list[tuple[_Node, str, str, str, bool]] = []
        # By an overlay's kind and reach: the elements, and those whose ::before or ::after, it would cover the
        # footer from.
        self.overlay_index: dict[tuple[str, bool], tuple[_NodeIndex, _NodeIndex]] = {}
        html = _Node("html", _NONE, _NONE, None, None, None)
        # A body without <body> tags is one all the same; what is before it (a <head>, written or not) is unknown.
        self.document = [html, _Node("body", _NONE, _NONE, html, None, None)]
        self.footer: list[_Node] = []
        self.custom: dict[str, set[str]] = {}
        self.keyframes: dict[str, list[_Keyframe]] = {}
        self.perspective: float | None = None  # the smallest the message gives an element (`_perspective`)
        self.sized: list[tuple[_ElementReach, dict[str, str]]] | None = None  # `_sized_at_footer`, once read

    def read(self, html_body: str) -> None:
        try:
            self._read(html_body)
        except _Unreadable as exc:
            self._refuse(_reason(_R_UNREADABLE, what=exc.what), exc.matched)

    def _read(self, html_body: str) -> None:
        self.custom = _custom_properties(html_body)
        self.keyframes = _keyframes(html_body)
        self.perspective = _perspective(html_body)
        end = _BODY_END.search(html_body)
        footer_at = end.start() if end else len(html_body)
        self.feed(html_body[:footer_at])
        self.at_footer = list(self.stack)
        for element in self.at_footer:
            element.node.open_at_footer = True
        self._add_footer()
        # HTMLParser keeps what it cannot finish yet (an open comment or tag) until more input comes.
        self.unfinished = str(getattr(self, "rawdata", ""))
        self.feed(html_body[footer_at:])
        self._finish()
        self._pop_to(0)
        self._place()
        self._check_footer()
        self._check_overlays()
        ancestors = [element.node for element in self.at_footer] + self.document
        reach = (_FooterReach(self.footer, ancestors),
                 _FooterReach([node for node in self.footer if node.tag in _CLIPPED_FOOTER_TAGS], ancestors))
        for css in self.style_sheets:
            self._check_style_sheet(css, reach)

    def _finish(self) -> None:
        """Read what is left at the end: what the parser could not finish (a comment, or a tag with no ">") is then
        read on as text, from each later "<" on. HTMLParser looks for the end of each such construct to the end of
        the text again, so a long unfinished rest with many "<" is refused as unreadable instead."""
        rest = str(getattr(self, "rawdata", ""))
        if rest.startswith("<") and not self.cdata_elem and (
                len(rest) > _UNFINISHED_LENGTH or rest.count("<", 1) > _UNFINISHED_MARKUP):
            self.rawdata = ""
            raise _Unreadable(f"markup left unfinished at the end with more than {_UNFINISHED_MARKUP} \"<\" or "
                              f"{_UNFINISHED_LENGTH // 1000} KB after it", rest)
        self.close()

    # Parser events

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, void=tag in _VOID)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # Browsers ignore the slash of <div/>: only void elements are empty.
        self._start(tag, attrs, void=tag in _VOID)

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK:
            self.text.append(_BLOCK_BREAK)
        # like a browser, an end tag does not close what is outside the table cell it is in
        depth = self._innermost(tag, _SCOPE_IN_CELL if tag in _TABLE_PARTS else _SCOPE)
        if depth is not None:
            self._pop_to(depth)

    def handle_data(self, data: str) -> None:
        top = self.stack[-1].tag if self.stack else ""
        if top == "style":
            self.style_sheets[-1] += data
            return
        if top == "script":
            return
        if top == "head" and data.strip():
            self._pop_to(len(self.stack) - 1)
        self.text.append(data)
        for link in self.open_links:
            link.text.append(data)
        if _says_unsubscribe(data) and not any(link.unsubscribe for link in self.open_links):
            self._check_visible()

    # Elements

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], void: bool) -> None:
        values: dict[str, str] = {}
        for name, value in attrs:
            values.setdefault(name, value or "")
        if self.stack and self.stack[-1].tag == "head" and tag not in _IN_HEAD:
            self._pop_to(len(self.stack) - 1)  # as in a browser: the body starts, and a later </head> is nothing
        if tag in _IMPLIES_END:
            self._close_implied(tag)
        elif tag == "a":
            self._close_open("a", stop=_SCOPE)  # links do not nest: a new one ends the open one
        elif tag == "body" and self.open_tags.get("head"):
            self._close_open("head", stop=())
        if tag in _BLOCK:
            self.text.append(_BLOCK_BREAK)
        if values.get("title"):  # shown when the pointer rests on the element
            self.text.append(f" {values['title']} ")
        if values.get("alt"):
            self.text.append(f" {values['alt']} ")
            if tag == "img":
                for link in self.open_links:
                    link.text.append(values["alt"])
        for name in _LINK_ATTRIBUTES:
            if values.get(name):
                self.links.extend(_srcset_urls(values[name]) if name == "srcset" else (values[name],))
        declarations: dict[str, str] = {}
        when = ""  # the moment of an animation the style is read at
        if values.get("style"):
            self._read_css(values["style"])
            declarations, when = _worst(self._readings(values["style"]))
        if tag == "bdo" or _CSS_OVERRIDE.search(values.get("unicode-bidi", "").lower()):  # SVG's attribute too
            self._refuse(_reason(_R_REVERSED, what=f"<{tag}>" if tag == "bdo" else "unicode-bidi override"),
                         self.get_starttag_text() or f"<{tag}>")
        if tag == "template":
            attribute = next((name for name in _SHADOW_ROOT_ATTRIBUTES if name in values), None)
            if attribute is not None:
                self._refuse(_reason(_R_SHADOW_ROOT, attribute=attribute), self.get_starttag_text() or "<template>")
        node = self._add_node(tag, values, declarations, void)
        if declarations:
            overlay = _overlay(declarations, drawn_itself=tag in _DRAWN_ITSELF)
            if overlay:
                kind, what = overlay
                self.overlays.append((node, kind, f"{what} {when}".rstrip(), self.get_starttag_text() or f"<{tag}>",
                                      _escapes(declarations)))
        if tag == "link" and "stylesheet" in values.get("rel", "").lower().split() and not _font_css(
                values.get("href", "")):
            self._refuse(_reason(_R_EXTERNAL_CSS, what="<link rel=stylesheet>"), self.get_starttag_text() or "<link>")
        if void:
            return
        self._push(tag, values, declarations, node)
        if when and self.stack[-1].hides:
            self.stack[-1].hides += f" {when}"
        if tag == "style":
            self.style_sheets.append("")
        elif tag == "a":
            href = values.get("href")
            link = self.stack[-1].link = _Link(href, self.stack[-1].start,
                                               href is not None and _UNSUBSCRIBE_HREF.fullmatch(href) is not None)
            self.open_links.append(link)
            if link.unsubscribe:
                self._check_visible()

    def _add_node(self, tag: str, values: dict[str, str], declarations: dict[str, str], void: bool) -> _Node:
        """The element as a node of the document, after the last element in its parent."""
        self.elements += 1
        if self.elements > _ELEMENTS:
            raise _Unreadable(f"more than {_ELEMENTS} elements", self.get_starttag_text() or f"<{tag}>")
        depth = len(self.stack)
        names = values.get("class", "") + values.get("id", "")
        node = _Node(tag, frozenset(values["class"].split()) if "class" in values else _NONE,
                     frozenset(values["id"].split()) if "id" in values else _NONE,
                     self.stack[-1].node if self.stack else None, self.last_child[depth], declarations.get("position"),
                     any_name="{{" in names or "{%" in names)
        self.nodes.append(node)
        self.last_child[depth] = node
        del self.last_child[depth + 1:]
        if not void:
            self.last_child.append(None)
        return node

    def _add_footer(self) -> None:
        """The footer delivery appends where the body ends (render.py): <div style=...><a href=...>Unsubscribe</a>
        <br>Email marketing by Herald</div><img> (the open-tracking pixel), after the last element there."""
        parent = self.stack[-1].node if self.stack else None
        previous = self.last_child[len(self.stack)] if len(self.last_child) > len(self.stack) else None
        div = _Node("div", _NONE, _NONE, parent, previous, None, footer=True)
        link = _Node("a", _NONE, _NONE, div, None, None, footer=True)
        self.footer = [div, link, _Node("br", _NONE, _NONE, div, link, None, footer=True),
                       _Node("img", _NONE, _NONE, parent, div, None, footer=True)]
        self.nodes.extend(self.footer)

    def _push(self, tag: str, values: dict[str, str], declarations: dict[str, str], node: _Node) -> None:
        fg = bg = None
        if declarations:
            fg, bg = _text_colour(declarations.get("color")), _background(declarations)
            if _text_colour(declarations.get("-webkit-text-fill-color")) is not None:
                fg = _text_colour(declarations["-webkit-text-fill-color"])  # what is drawn, whatever `color` says
        if tag == "font" and fg is None:
            fg = _colour(values.get("color"))
        if bg is None and "bgcolor" in values:
            bg = _colour(values["bgcolor"])
        if bg is None and values.get("background"):
            bg = _UNKNOWN  # a background image: its colour is not known
        classes = frozenset(values["class"].split()) if "class" in values else _NONE
        if bg is None and self.class_bg and classes:
            bg = next((self.class_bg[name] for name in classes if name in self.class_bg), None)
        concealing = ((_concealing(declarations) or _replaced(declarations) if declarations else None)
                      or self._hidden_by_markup(tag, values))
        tiny_font = _tiny_font(declarations) if declarations else None
        invisible = _invisible(declarations) if declarations else None
        parent = self.stack[-1] if self.stack else None
        sizes = _attribute_sizes(tag, values) if tag in _SIZED_BY_ATTRIBUTES else None
        element = _Element(
            tag, self.get_starttag_text() or f"<{tag}>", concealing or invisible or tiny_font, bg, classes,
            frozenset(values["id"].split()) if "id" in values else _NONE,
            concealed_by=parent.concealed_by if parent else None,
            tiny_font_by=parent.tiny_font_by if parent else None,
            invisible_by=parent.invisible_by if parent else None,
            # links keep the client's link colour unless styled themselves
            text_colour=fg if fg is not None or tag == "a" else parent.text_colour if parent else None,
            background=bg if bg is not None else parent.background if parent else None,
            coloured_by=parent.coloured_by if parent else None,
            node=node, sizes=sizes,
            clips=(_clipping(declarations) or _attribute_clipping(sizes, declarations)) if declarations else None)
        if concealing:
            element.concealed_by = element
        if declarations:
            if tiny_font or _font_size(declarations) is not None:
                element.tiny_font_by = element if tiny_font else None
            if invisible or "visibility" in declarations:
                element.invisible_by = element if invisible else None
        if fg is not None or bg is not None:
            element.coloured_by = element
            if element.hides is None and _invisible_text(element.text_colour, element.background or self.page_bg):
                element.hides = f"text colour {_css_colour(element.text_colour)} on the same background"
        self.open_tags.setdefault(tag, []).append(len(self.stack))
        self.stack.append(element)

    @staticmethod
    def _hidden_by_markup(tag: str, values: dict[str, str]) -> str | None:
        if "hidden" in values:
            return "the hidden attribute"
        if "popover" in values:  # not shown until something opens it, and an email opens nothing
            return "the popover attribute"
        if "inert" in values:  # shown, but nothing in it can be clicked
            return "the inert attribute: nothing in it can be clicked"
        if tag in ("details", "dialog") and "open" not in values:
            return f"a closed <{tag}>"
        if tag == "marquee":  # what it holds moves on, cut off at its edges: a link in it cannot be read or clicked
            return "a <marquee> moves its content through a box that cuts it off"
        if tag in _NOT_DISPLAYED:
            return f"<{tag}> content is not displayed"
        return None

    def _close_implied(self, tag: str) -> None:
        """The end tags HTML lets authors leave out (a <p> ends at the next block, an <li> at the next <li>...)."""
        if tag in _CLOSES_P:
            self._close_open("p", stop=_SCOPE)
        if tag == "li":
            self._close_open("li", stop=_LIST_SCOPE)
        elif tag in ("dt", "dd"):
            self._close_open("dt", stop=_DL_SCOPE)
            self._close_open("dd", stop=_DL_SCOPE)
        elif tag in ("td", "th"):
            self._close_open("td", stop=_ROW_SCOPE)
            self._close_open("th", stop=_ROW_SCOPE)
        elif tag == "tr":
            self._close_open("tr", stop=_TABLE_SCOPE)
        elif tag in ("tbody", "thead", "tfoot"):
            for part in ("tbody", "thead", "tfoot"):
                self._close_open(part, stop=_TABLE_SCOPE)
        elif tag in ("option", "optgroup") and self.stack and self.stack[-1].tag == "option":
            self._pop_to(len(self.stack) - 1)

    def _close_open(self, tag: str, stop: Collection[str]) -> None:
        depth = self._innermost(tag, stop)
        if depth is not None:
            self._pop_to(depth)

    def _innermost(self, tag: str, stop: Collection[str]) -> int | None:
        """The depth of the innermost open `tag`, unless an element of `stop` is open inside it (None): what a
        browser's "has an element in scope" reads, from the depths of each tag's open elements, not the stack."""
        depths = self.open_tags.get(tag)
        if not depths:
            return None
        inside = max((self.open_tags[name][-1] for name in stop if name != tag and self.open_tags.get(name)),
                     default=-1)
        return depths[-1] if inside < depths[-1] else None

    def _pop_to(self, depth: int) -> None:
        while len(self.stack) > depth:
            self._closed(self.stack.pop())

    def _closed(self, element: _Element) -> None:
        self.open_tags[element.tag].pop()
        if element.tag == "style":
            self._note_style_sheet(self.style_sheets[-1])
            self._read_css(self.style_sheets[-1])
        link = element.link
        if link is None:
            return
        self.open_links.remove(link)
        words = " ".join(" ".join(link.text).split())
        if not link.unsubscribe and _says_unsubscribe(words):
            self._refuse(_reason(_R_FAKE, href=link.href or ""), f"{link.start}{words}</a>")

    # Checks

    def _check_visible(self) -> None:
        """Unsubscribe content is at the current position: refuse when what encloses it hides it."""
        if not self.stack:
            return
        top = self.stack[-1]
        culprit = top.concealed_by or top.invisible_by or top.tiny_font_by
        if culprit is not None:
            self._refuse(_reason(_R_HIDDEN, what=culprit.hides), culprit.start)
        elif _invisible_text(top.text_colour, top.background or self.page_bg):
            source = top.coloured_by or top
            if source.hides:
                self._refuse(_reason(_R_HIDDEN, what=source.hides), source.start)
            else:
                self._refuse(_reason(_R_SAME_COLOUR, what=_css_colour(top.text_colour)), source.start)

    def _check_footer(self) -> None:
        """What the footer delivery appends where the body ends would be inside."""
        if self.unfinished.startswith("<!--"):
            self._refuse(_R_COMMENT, self.unfinished)
        elif self.unfinished.startswith("<") and not any(e.tag in ("style", "script") for e in self.at_footer):
            self._refuse(_R_TAG, self.unfinished)
        for element in self.at_footer:
            if element.tag in _NOT_DISPLAYED:
                self._refuse(_reason(_R_NOT_DISPLAYED, tag=element.tag), element.start)
            elif element.hides or element.clips:
                # Conservative: the footer must not depend on setting again what an unclosed element changed, nor
                # on fitting in what is left of a height that cuts off the rest.
                self._refuse(_reason(_R_UNCLOSED, what=element.hides or element.clips, tag=element.tag), element.start)
        background = (self.at_footer[-1].background if self.at_footer else None) or self.page_bg
        for drawn in (_FOOTER_TEXT, _FOOTER_LINK):
            if _same_colour(drawn, background):
                source = next((e for e in reversed(self.at_footer) if e.bg is not None), None)
                self._refuse(_reason(_R_FOOTER_BACKGROUND, colour=_css_colour(background)),
                             source.start if source is not None else f"background {_css_colour(background)}")
                break

    def _place(self) -> None:
        """Which elements are surely positioned (by their style attribute, or a style sheet's rule for them alone
        that nothing may undo), and so the block each absolutely positioned element is placed in."""
        positions, statics = _positioning(self.style_sheets, self.custom)
        positioning, static = _NodeIndex(()), _NodeIndex(())
        if positions:
            positioning = _NodeIndex(self.nodes)
            surely = {id(node) for compound in positions for node in positioning.selected(compound)
                      if compound.fits(node, surely=True)}
        if statics:
            static = _NodeIndex(self.nodes)
        unsure = {id(node) for compound in statics for node in static.selected(compound)}
        for node in self.nodes:  # parents before their content
            if node.position is not None:
                node.positioned = node.position in _POSITIONED
            else:
                node.positioned = bool(positions) and id(node) in surely
            node.positioned = node.positioned and id(node) not in unsure
            parent = node.parent
            node.containing = None if parent is None else parent if parent.positioned else parent.containing

    def _check_overlays(self) -> None:
        """Elements drawn over others by their style attribute: refused when they cover the footer."""
        for node, kind, what, start, escapes in self.overlays:
            if kind == "page" or _covers_footer(node, kind, False, escapes):
                self._refuse(_reason(_R_OVERLAY, what=what), start)

    def _check_style_sheet(self, css: str, footer: tuple[_FooterReach, _FooterReach]) -> None:
        footer_bg = (self.at_footer[-1].background if self.at_footer else None) or self.page_bg
        reach, clipped_reach = footer
        for selector, body, dark_mode, _ in _css_rules(css):
            for declarations, when in self._readings(body):
                if self._check_rule(selector, body, declarations, dark_mode, (reach, clipped_reach, footer_bg),
                                    when) or self._check_sized(selector, body, declarations, when):
                    break

    def _sized_at_footer(self) -> list[tuple[_ElementReach, dict[str, str]]]:
        """The elements open where the footer goes that their attributes size, by what of that size a rule's
        overflow could cut the footer off at (a height; a width narrow, wide or whole), each group with the sizes of
        its first: a rule is judged once a group, however many elements there are."""
        groups: dict[tuple[frozenset[str], str], tuple[list[_Node], dict[str, str]]] = {}
        for element in self.at_footer:
            if element.sizes:
                width = element.sizes.get("width", "")
                kind = ("" if not width else "whole" if _full_width(width) else
                        "narrow" if _too_narrow(width) else "wide")
                groups.setdefault((frozenset(element.sizes), kind), ([], element.sizes))[0].append(element.node)
        if not groups:
            return []
        outer = _Names([*(element.node for element in self.at_footer), *self.document])
        return [(_ElementReach(nodes, outer), sizes) for nodes, sizes in groups.values()]

    def _check_sized(self, selector: str, body: str, declarations: dict[str, str], when: str) -> bool:
        """Refuse a rule that clips an element open where the footer goes to the size its attributes give it
        (`_attribute_clipping`); whether it did."""
        if self.sized is None:
            self.sized = self._sized_at_footer()
        for reach, sizes in self.sized:
            what = _attribute_clipping(sizes, declarations)
            if what and reach.reaches(selector):
                self._refuse(_reason(_R_STYLE, selector=_snippet(selector)[:80], what=f"{what} {when}".rstrip()),
                             f"{selector} {{{_snippet(body)}}}")
                return True
        return False

    def _readings(self, style: str, transforms: bool = True) -> list[tuple[dict[str, str], str]]:
        """A style's declarations as screening reads them, each with the moment of an animation it is ("": none):
        with each value of its var()s, at each lasting moment of its animations (`_animated`), and its transforms
        seen in a parent's perspective too, when the message gives an element one (with `transforms`)."""
        readings = [(declarations, "") for declarations in _variants(_declarations(style), self.custom)]
        if self.keyframes:
            readings += [(frame, when) for declarations, _ in readings
                         for animated, when in _animated(declarations, self.keyframes)
                         for frame in _variants(animated, self.custom)]
        if self.perspective is not None and transforms:
            seen_in = str(self.perspective)
            readings += [({**declarations, _SEEN_IN_PERSPECTIVE: seen_in}, when) for declarations, when in readings
                         if not declarations.keys().isdisjoint(_TRANSFORMED) and _out_of_plane(declarations)]
        return readings

    def _check_rule(self, selector: str, body: str, declarations: dict[str, str], dark_mode: bool,
                    footer: tuple[_FooterReach, _FooterReach, _Colour], when: str = "") -> bool:
        """Refuse a style rule (one reading of its var()s, or a moment of its animation: `when`) that hides or
        covers the footer; whether it did."""
        reach, clipped_reach, footer_bg = footer
        overlay = _overlay(declarations)
        if overlay:
            kind, drawn = overlay
            if kind == "page" or self._could_cover(selector, kind, _escapes(declarations)):
                self._refuse(_reason(_R_STYLE_OVERLAY, selector=_snippet(selector)[:80],
                                     what=f"{drawn} {when}".rstrip()), f"{selector} {{{_snippet(body)}}}")
                return True
        what = _hiding(declarations)
        if what is None and (clips := _clipping(declarations)) and clipped_reach.reaches(selector):
            what = clips
        # Only the footer's text and link can be obscured (not its 1px image).
        if (what is None and not declarations.keys().isdisjoint(_OBSCURING_PROPERTIES)
                and (obscured := _obscuring(declarations)) and clipped_reach.reaches(selector)):
            what = obscured
        if what is None and (replaced := _replaced(declarations)):
            # on the elements themselves: a ::before's or ::after's content is drawn beside theirs
            own = ",".join(one for one in _SELECTOR_LIST.split(selector)
                           if "::" not in one and not _GENERATED.search(one))
            if own and clipped_reach.reaches(own):
                what = replaced
        # Light text on the page's background is what dark mode is for: the client darkens the page itself.
        if what is None and not dark_mode and _same_colour(_text_colour(declarations.get("color")),
                                                           _background(declarations) or footer_bg):
            what = f"color:{declarations['color']} on the page's background"
        if what and reach.reaches(selector):
            self._refuse(_reason(_R_STYLE, selector=_snippet(selector)[:80], what=f"{what} {when}".rstrip()),
                         f"{selector} {{{_snippet(body)}}}")
            return True
        return False

    def _could_cover(self, selector: str, kind: str, escapes: bool) -> bool:
        """Whether a rule drawing what it selects over others (`_overlay`'s kind) could select an element whose
        block holds the footer: its subject could be an element (not of the footer: that one shows) outside any
        positioned element, or inside one the footer ends up in; or a ::before or ::after of such an element or
        of the footer's."""
        index = self.overlay_index.get((kind, escapes))
        if index is None:
            index = self.overlay_index[(kind, escapes)] = (
                _NodeIndex(n for n in self.nodes if not n.footer and _covers_footer(n, kind, False, escapes)),
                _NodeIndex(n for n in self.nodes if _covers_footer(n, kind, True, escapes)))
        for one in _SELECTOR_LIST.split(selector):
            if not one.strip():
                continue
            subject = _selector(one)[0][-1]
            if next(index[subject.generated].selected(subject), None) is not None:
                return True
        return False

    def _read_css(self, css: str) -> None:
        plain = _CSS_COMMENT.sub("", css)
        if _CSS_OVERRIDE.search((_css_unescape(plain) if "\\" in plain else plain).lower()):
            self._refuse(_reason(_R_REVERSED, what="CSS unicode-bidi override"), css)
        """CSS shows text (`content:"..."`), loads what its URLs name, and may import a style sheet from elsewhere."""
        texts, urls, imports = _css_reading(css)
        self.text.extend(f"\n{text}\n" for text in texts)
        self.links.extend(urls)
        for url in imports:
            if not _font_css(url):
                self._refuse(_reason(_R_EXTERNAL_CSS, what="@import"), f"@import {url}")

    def _refuse(self, reason: str, matched: str) -> None:
        refusal = Refusal(reason=reason, where="html_body", matched=_snippet(matched))
        if refusal not in self.refusals:
            self.refusals.append(refusal)

    def _note_style_sheet(self, css: str) -> None:
        """The page's and classes' backgrounds a style sheet sets, for the colour checks of the elements after it."""
        for selector, body, dark_mode, _ in _css_rules(css):
            self.rules += 1 + selector.count(",")  # each selector of a list is read as a rule of its own
            if self.rules > _STYLE_RULES:
                raise _Unreadable(f"more than {_STYLE_RULES} style rules", f"{selector} {{{_snippet(body)}}}")
            for declarations, _ in self._readings(body, transforms=False):
                background = _background(declarations)
                if background is None or dark_mode:
                    continue
                for one in selector.lower().split(","):
                    one = one.strip()
                    if one in ("body", "html", ":root"):
                        self.page_bg = background
                    elif re.fullmatch(r"[a-z0-9]*\.[\w\-]+", one):
                        self.class_bg[one.partition(".")[2]] = background


def _css_colour(colour: _Colour | None) -> str:
    if colour is None or colour[3] < 0:
        return "?"
    return "#{:02x}{:02x}{:02x}".format(*colour[:3])


class _SelectorList:
    """Splits a selector list at the commas between its selectors, not those in :is(a, b): at each comma whose next
    parenthesis, if any, is a "(". Found in one pass from the end: a pattern looking ahead from each comma would read
    a list of thousands of selectors once per comma."""

    @staticmethod
    def split(selectors: str) -> list[str]:
        marks = list(_COMMA_OR_PARENTHESIS.finditer(selectors))
        ends: list[int] = []
        next_parenthesis = "("
        for mark in reversed(marks):
            if mark.group() != ",":
                next_parenthesis = mark.group()
            elif next_parenthesis == "(":
                ends.append(mark.start())
        parts, start = [], 0
        for end in reversed(ends):
            parts.append(selectors[start:end])
            start = end + 1
        parts.append(selectors[start:])
        return parts


_COMMA_OR_PARENTHESIS = re.compile(r"[,()]")
_SELECTOR_LIST = _SelectorList()


class _FooterReach:
    """Whether a selector could select an element of the footer or one the footer ends up inside (`ancestors`,
    with <html> and <body>, written or not)."""

    def __init__(self, footer: list[_Node], ancestors: list[_Node]) -> None:
        self.subjects = _NodeIndex([*footer, *ancestors])
        # What an element of the footer is inside: the elements open there, and the footer's <div> for its link.
        self.outer = _Names([*ancestors, *(node for node in footer if node.tag == "div")])
        self.known: dict[tuple[tuple[_Compound, ...], tuple[str, ...]], bool] = {}  # style sheets repeat selectors

    def reaches(self, selector: str) -> bool:
        """Its subject fits one of those elements, the compound before a `+` fits the element right before that
        one (before a `~`, any before it), and each compound before a descendant or child combinator fits an
        element the footer is inside. `.image_block img + div` reaches the footer's <div> only when the body ends
        with an <img> inside an element of class image_block."""
        for one in _SELECTOR_LIST.split(selector):
            if not one.strip():
                continue
            compounds, combinators = _selector(one)
            key = (tuple(compounds), tuple(combinators))
            if key not in self.known:
                self.known[key] = self._reaches(compounds, combinators)
            if self.known[key]:
                return True
        return False

    def _reaches(self, compounds: list[_Compound], combinators: list[str]) -> bool:
        last_outer = max((i for i, combinator in enumerate(combinators) if combinator in " >"), default=-1)
        if not all(self.outer.could_fit(compound) for compound in compounds[:last_outer + 1]):
            return False
        sibling = combinators[-1] if combinators and combinators[-1] in "+~" else None
        return any(sibling is None or _follows(node, compounds[-2], sibling)
                   for node in self.subjects.selected(compounds[-1]))


def _follows(node: _Node, compound: _Compound, combinator: str) -> bool:
    """Whether the element right before `node` (`+`), or any before it (`~`), could fit the compound."""
    if node.tag == "body":
        return True  # after a <head>, written or not
    sibling = node.previous
    for _ in range(_SIBLINGS_READ):
        if sibling is None:
            return False
        if compound.fits(sibling):
            return True
        if combinator == "+":
            return False
        sibling = sibling.previous
    return True


class _ElementReach(_FooterReach):
    """Whether a selector could select one of some elements the footer ends up inside (`nodes`), inside those of
    `outer`."""

    def __init__(self, nodes: list[_Node], outer: _Names) -> None:
        super().__init__(nodes, [])
        self.outer = outer


# --- the screening -----------------------------------------------------------------------------------------------


# Template code in an HTML body (herald_shared.templating: Jinja2 syntax).
_TEMPLATE_TAG = re.compile(r"\{%-?\s*(\w*)")
_BLOCK_STARTS = frozenset({"if", "for", "macro", "call", "filter", "with", "block", "raw"})
_BRANCHES = frozenset({"elif", "else"})
# After template code became placeholders (none holds ">"): HTML comments, tags, and a tag's quoted values.
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
# Elements whose content HTML reads as text up to their own end tag: a "<!--" or a tag in there is none. Not
# <noscript>: a mail client runs no script, so it reads what is inside as markup.
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"})
# Where a comment ends, looked for from its "<!--" on, as HTML does: "-->" or "--!>", and "<!-->" or "<!--->"
# are whole (empty) comments.
_COMMENT_END = re.compile(r"--!?>")
_HTML_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^>]*)>")
# From a name's start (after its leading dashes) and without backtracking: linear on a long unquoted word.
_QUOTED_VALUE = re.compile(r"""(?<![\w-])(-*+)(\w[\w-]*+)\s*+=\s*+("[^"]*+"|'[^']*+')""")
_CODE_MARK = "\x01"  # stands for one piece of template code once it is out of the way
# Elements whose end tag HTML lets a document leave out (the next sibling or the parent's end closes them).
_OPTIONAL_END = frozenset({"p", "li", "dt", "dd", "rt", "rp", "optgroup", "option", "colgroup", "caption", "thead",
                           "tbody", "tfoot", "tr", "td", "th", "head"})
_R_CODE_IN_CSS = ("Template code inside CSS ({what}): what it writes there cannot be screened, and it could hide "
                  "the unsubscribe link and footer. Write the style out, or pick between whole styled elements.")
_R_CODE_IN_TAG = ("Template code inside an HTML tag, outside a quoted attribute value: it could add an attribute "
                  "that hides the unsubscribe link and footer (hidden, style). Put it inside a quoted value.")
_R_SPLIT = ("<{tag}> is opened and closed on different sides of a template condition ({{% {keyword} %}}): "
            "depending on the subscriber, the element could stay open around the unsubscribe link and footer "
            "Herald adds. Keep whole elements inside each branch.")
_R_BODY_IN_BRANCH = ("</{tag}> inside a template condition: where the body ends, and so where the unsubscribe "
                     "link and footer go, must not depend on the subscriber.")
_R_COMMENT_SPLIT = ("An HTML comment (<!--) is opened and closed on different sides of a template condition: "
                    "depending on the subscriber, it could stay open to the end of the body and comment out the "
                    "unsubscribe link and footer Herald adds there. Keep whole comments inside each branch.")


def template_refusals(html_body: str) -> list[Refusal]:
    """What template code could do to the footer that screening the source cannot see: write CSS, add
    attributes to a tag, or leave an element or an HTML comment open (or end the body) in one branch of a
    condition only. Every branch of a condition must hold whole elements and whole comments: template code
    writes no markup (HTML output is escaped), so where comments begin and end for a subscriber is decided by
    which branches' text they get, and a comment begun in one branch and ended in another (or never) is open
    at the footer for some of them (`{% if vip %}<!--{% else %}<!-- -->{% endif %}</body>`)."""
    refusals: list[Refusal] = []
    codes: list[str] = []

    def mark(code: str) -> str:
        codes.append(code)
        return f"{_CODE_MARK}{len(codes) - 1}{_CODE_MARK}"

    # A mark written in the body itself would read as the code of another piece (or of none, an error).
    marked = _template_code(_without_template_comments(html_body.replace(_CODE_MARK, " ")), mark)
    uncommented = _HTML_COMMENT.sub(lambda m: "".join(re.findall(f"{_CODE_MARK}\\d+{_CODE_MARK}", m.group(0))),
                                    marked)
    for start, stop, content in _style_elements(uncommented):
        if _CODE_MARK in content:
            refusals.append(Refusal(_reason(_R_CODE_IN_CSS, what="a <style> element"), "html_body",
                                    _restore(uncommented[start:stop], codes)[:200]))
    # Each piece of markup with the branch of the template it sits in: (kind, tag or keyword, branch, text).
    branch, next_branch = 0, 1
    blocks: list[tuple[int, int]] = []  # (branch outside the block, elements open when it began)
    elements = _OpenElements()
    position = 0
    # An HTML comment open: the branch it began in, where it began, and where it ends (len(marked): never).
    comment: tuple[int, int, int] | None = None
    raw_text: str | None = None  # an element open whose content is text up to its end tag
    pieces = re.compile(f"{_CODE_MARK}(\\d+){_CODE_MARK}|(<!--)|" + _HTML_TAG.pattern)
    # No tag begins after the last ">": looking for one there from every "<" would read the rest each time.
    last_tag_end = marked.rfind(">") + 1
    no_tag = re.compile(f"{_CODE_MARK}(\\d+){_CODE_MARK}|(<!--)")
    # In a comment a "<!--" is text, changing nothing: not stopping at each saves a step per "<!--" of a long one.
    in_comment = re.compile(f"{_CODE_MARK}(\\d+){_CODE_MARK}|((?!))|" + _HTML_TAG.pattern)  # (2): never
    code_only = re.compile(f"{_CODE_MARK}(\\d+){_CODE_MARK}|((?!))")
    at = 0
    while True:
        piece = None
        if comment is not None:  # what is found in it ends in it: a tag ends at a ">" by the comment's last
            piece = (in_comment.search(marked, at, min(comment[2], last_tag_end))
                     or code_only.search(marked, at, comment[2]))
            if piece is None:
                at = comment[2]
        if piece is None:
            piece = pieces.search(marked, at, last_tag_end) or no_tag.search(marked, at)
        if piece is None:
            break
        at = piece.end()
        if comment is not None and piece.start() >= comment[2]:  # the comment has ended before this piece
            if comment[0] != branch:
                refusals.append(Refusal(_R_COMMENT_SPLIT, "html_body",
                                        _restore(marked[comment[1]:comment[2]], codes)[:200]))
            at, comment = comment[2], None
            continue
        if piece.group(2) is not None:
            if comment is None and raw_text is None:
                end = _COMMENT_END.search(marked, piece.start() + 2)
                comment = (branch, piece.start(), end.end() if end else len(marked))
            continue
        if piece.group(1) is not None:  # template code
            code = codes[int(piece.group(1))]
            opening = _TEMPLATE_TAG.match(code)
            keyword = opening.group(1) if opening else ""
            starts = keyword in _BLOCK_STARTS or (keyword == "set" and "=" not in code)
            if starts or keyword in _BRANCHES or keyword.startswith("end"):
                if keyword in _BRANCHES or keyword.startswith("end"):
                    left_open = elements.opened_in(branch)
                    if left_open:
                        refusals.append(_left_open(left_open[0], keyword))
                        elements.close(len(elements.open) - len(left_open))
                if starts:
                    blocks.append((branch, len(elements.open)))
                elif keyword.startswith("end") and blocks:
                    branch = blocks.pop()[0]
                    continue
                branch, next_branch = next_branch, next_branch + 1
            continue
        closing, tag, inside = piece.group(3) == "/", piece.group(4).lower(), piece.group(5)
        if comment is not None or (raw_text is not None and not (closing and tag == raw_text)):
            continue  # text to HTML, not a tag
        raw_text = tag if tag in _RAW_TEXT and not closing else None
        unquoted = _QUOTED_VALUE.sub(lambda m: m.group(1) if m.group(2).lower() != "style" else m.group(0), inside)
        if _CODE_MARK in unquoted:
            what = _reason(_R_CODE_IN_CSS, what="a style attribute") if re.search(r"\bstyle\s*=", unquoted,
                                                                               re.IGNORECASE) else _R_CODE_IN_TAG
            refusals.append(Refusal(what, "html_body", _restore(piece.group(0), codes)[:200]))
        if tag in ("body", "html") and branch:
            refusals.append(Refusal(_reason(_R_BODY_IN_BRANCH, tag=tag), "html_body", _restore(piece.group(0), codes)))
        if tag in _VOID or tag in _OPTIONAL_END:
            continue
        if not closing:
            elements.push(tag, branch)
            continue
        opened = elements.last(tag)
        if opened is None:
            continue  # a browser ignores an end tag with nothing to close
        if elements.open[opened][1] != branch:
            refusals.append(Refusal(_reason(_R_SPLIT, tag=tag, keyword="if"), "html_body",
                                    _restore(marked[max(position, piece.start() - 120):piece.end()], codes)[-200:]))
        elements.close(opened)
        position = piece.end()
    if comment is not None and comment[0] != branch:  # begun in a branch, ended (or open to the end) outside it
        refusals.append(Refusal(_R_COMMENT_SPLIT, "html_body",
                                _restore(marked[comment[1]:comment[2]], codes)[:200]))
    return refusals


# A link's target in HTML (every attribute a client loads or a reader follows) and in a text part (`<URL>`, as
# `campaign_links` writes one), read once template code is marked (`_CODE_MARK`), so a ">" in it ends nothing.
_LINK_TARGET = re.compile(r"""(?<![\w-])(?:href|src|srcset|action|formaction|background|poster)\s*+=\s*+"""
                          r"""(?:"([^"]*+)"|'([^']*+)'|([^\s"'>]++))""", re.IGNORECASE)
_TEXT_TARGET = re.compile(r"<([^\s<>]++)>")
_URL_START = re.compile(r"[\x00-\x20]*+([^:/?#]*+):")  # a scheme, after what browsers strip before a URL
_AUTHORITY = re.compile(r"[^/?#]*+")
# The schemes whose URLs always have a host, read after any run of slashes (WHATWG URL: "special schemes").
_SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp", "file"})


def templated_link_targets(html_body: str | None, text_body: str | None) -> list[tuple[str, str]]:
    """(part, link) for each link whose scheme or host template code writes (`https://{{ city }}/`,
    `{{ website }}`, `https://{{ shop }}.example/`): a member's value would choose where the link goes and what
    its address says, and no screening reads a member's values. A merge tag in the path, query or fragment
    (`https://shop.example/{{ id }}`) is personal, not a destination; `{{ unsubscribe_url }}` is Herald's own."""
    found: list[tuple[str, str]] = []
    for where, text, pattern in (("html_body", html_body, _LINK_TARGET), ("text_body", text_body, _TEXT_TARGET)):
        if not text or ("{{" not in text and "{%" not in text):
            continue
        codes: list[str] = []
        marked = _template_code(_without_template_comments(text.replace(_CODE_MARK, " ")), _marker(codes))
        for target in pattern.finditer(marked):
            value = next(group for group in target.groups() if group is not None)
            if _CODE_MARK not in value:
                continue
            link = _restore(value, codes)
            if where == "text_body" and "://" not in value and not value.startswith(_CODE_MARK):
                continue  # "<{{ first_name }}>" reads as no link
            if _UNSUBSCRIBE_HREF.fullmatch(link) is None and _chooses_destination(value):
                found.append((where, link[:REASON_PART]))
    return found


def _marker(codes: list[str]) -> Callable[[str], str]:
    """What stands for each piece of template code, `_CODE_MARK`s around its index in `codes`."""
    def mark(code: str) -> str:
        codes.append(code)
        return f"{_CODE_MARK}{len(codes) - 1}{_CODE_MARK}"
    return mark


def _chooses_destination(marked: str) -> bool:
    """Whether template code (marked) is in a link's scheme or host, as a browser reads the link: entities
    decoded, tabs and line breaks dropped, backslashes as slashes."""
    url = _URL_JUNK.sub("", html_unescape(marked)).replace("\\", "/")
    scheme = _URL_START.match(url)
    if scheme is not None:
        if _CODE_MARK in scheme.group(1):
            return True
        rest = url[scheme.end():]
        if scheme.group(1).lower() in _SPECIAL_SCHEMES:
            # WHATWG URL parsing: after a special scheme the host follows however many slashes come, none
            # included (`https:{{ x }}/a` and `https:/{{ x }}` go to the host x names).
            rest = "//" + rest.lstrip("/")
        elif not rest.startswith("//"):
            return False  # mailto:, tel:: an address, not a place the reader is taken to
    else:
        rest = url.lstrip("\x00 \t\n\f\r")
        if rest.startswith(_CODE_MARK):
            return True  # the whole target is the member's
        if not rest.startswith("//"):
            return False  # a path, a fragment
        rest = "//" + rest.lstrip("/")  # `///x` is scheme-relative too: the host is x
    authority = _AUTHORITY.match(rest, 2)
    return authority is not None and _CODE_MARK in authority.group()


def _without_template_comments(text: str) -> str:
    """The text without its template comments (`{# ... #}`). Found by position, not by a pattern: a comment
    left open would make a pattern read the rest of the text again from every later "{#"."""
    if "{#" not in text:
        return text
    kept: list[str] = []
    at = 0
    while (start := text.find("{#", at)) >= 0 and (end := text.find("#}", start + 2)) >= 0:
        kept.append(text[at:start])
        at = end + 2
    kept.append(text[at:])
    return "".join(kept)


_CODE_START = re.compile(r"(?=\{[%{])")


def _template_code(text: str, replace: Callable[[str], str]) -> str:
    """The text with each piece of template code (`{% ... %}`, `{{ ... }}`: from its start to the first end after
    it) replaced. A start with no end after it has none after any later start either: that is remembered, so a
    text of unclosed starts is read once."""
    kept: list[str] = []
    at = 0
    no_end = {"%": False, "{": False}
    for found in _CODE_START.finditer(text):
        start = found.start()
        kind = text[start + 1]
        if start < at or no_end[kind]:
            continue
        end = text.find("%}" if kind == "%" else "}}", start + 2)
        if end < 0:
            no_end[kind] = True
            continue
        kept.append(text[at:start])
        kept.append(replace(text[start:end + 2]))
        at = end + 2
    kept.append(text[at:])
    return "".join(kept)


_STYLE_START = re.compile(r"<style\b", re.IGNORECASE)
_STYLE_END = re.compile(r"</style\s*>", re.IGNORECASE)


def _style_elements(html: str) -> Iterator[tuple[int, int, str]]:
    """Each <style> element's start, end and content (to the end of the text when it is not closed), found by
    position: a "<style" with no ">" after it, or a <style> with no end tag after it, ends the search rather
    than being looked for again from every later "<style"."""
    at = 0
    while (found := _STYLE_START.search(html, at)) is not None:
        opened = html.find(">", found.end())
        if opened < 0:
            return
        closing = _STYLE_END.search(html, opened + 1)
        if closing is None:  # to the end, as a pattern's `$` reads it: before a last line break
            end = len(html) - 1 if html.endswith("\n") and len(html) - 1 > opened else len(html)
            yield found.start(), end, html[opened + 1:end]
            return
        yield found.start(), closing.end(), html[opened + 1:closing.start()]
        at = closing.end()


class _OpenElements:
    """The elements open in a template's markup, each with the branch it was opened in: those of the branch the
    reading is in are the last ones (a branch ends before its block's parent continues), and each tag's are kept
    by position, so ending a branch or an element costs what it closes, not what is open."""

    def __init__(self) -> None:
        self.open: list[tuple[str, int]] = []  # (tag, branch), outermost first
        self.by_tag: dict[str, list[int]] = {}

    def push(self, tag: str, branch: int) -> None:
        self.by_tag.setdefault(tag, []).append(len(self.open))
        self.open.append((tag, branch))

    def last(self, tag: str) -> int | None:
        positions = self.by_tag.get(tag)
        return positions[-1] if positions else None

    def opened_in(self, branch: int) -> list[tuple[str, int]]:
        start = len(self.open)
        while start and self.open[start - 1][1] == branch:
            start -= 1
        return self.open[start:]

    def close(self, depth: int) -> None:
        """Close the elements from `depth` on."""
        for tag, _ in self.open[depth:]:
            self.by_tag[tag].pop()
        del self.open[depth:]


def _left_open(element: tuple[str, int], keyword: str) -> Refusal:
    tag = element[0]
    return Refusal(_reason(_R_SPLIT, tag=tag, keyword=keyword), "html_body", f"<{tag}> … {{% {keyword} %}}")


# Block boundaries (`<p>`, `<div>`, `<br>`, a table cell) as the HTML reader marks them: a line break, but for
# one that looks inside a word ("Online ph</div><div>armacy": a letter, no space, a lower-case letter, as a new
# paragraph or cell starts with a capital), which the respelled reading joins (`_JOINED`). Not before a
# function word: "hero</li><li>in stock" is two words.
_BLOCK_BREAK = "\u2029"
_BLOCK_BREAKS = re.compile(_BLOCK_BREAK + "+")
_NEXT_WORD = re.compile(r"\w+")
_FUNCTION_WORDS = frozenset({"a", "an", "and", "as", "at", "by", "for", "in", "is", "it", "of", "on", "or", "the",
                             "to", "ar", "ir", "kā", "no", "par", "un", "uz", "vai"})


def _block_break(found: re.Match[str]) -> str:
    text, start, end = found.string, found.start(), found.end()
    if 0 < start and end < len(text) and text[start - 1].isalpha() and text[end].islower():
        word = _NEXT_WORD.match(text, end)
        if word is None or word.group() not in _FUNCTION_WORDS:
            return _JOINED
    return "\n"


def _restore(text: str, codes: list[str]) -> str:
    return re.sub(f"{_CODE_MARK}(\\d+){_CODE_MARK}", lambda m: codes[int(m.group(1))], text)


def screen(*, subject: str, preheader: str | None, html_body: str | None, text_body: str | None,
           from_name: str | None = None, from_email: str | None = None, reply_to: str | None = None) -> Screening:
    """Screen a campaign's content: prohibited-content matches (for staff review) and refusals (hidden footer).
    The sender's name and addresses are screened as parts of their own: the recipient reads them first.
    Template comments are read as what they are, nothing: a `</body>` in one does not end the body."""
    refusals: list[Refusal] = []
    if html_body:
        refusals = template_refusals(html_body)
    matches, html_refusals = _matches([
        ("from_name", from_name, False), ("from_email", from_email, False), ("reply_to", reply_to, False),
        ("subject", subject, False), ("preheader", preheader, False), ("html_body", html_body, True),
        ("text_body", text_body, False)])
    return Screening(matches=matches, refusals=tuple((html_refusals + refusals)[:MAX_REFUSALS]))


def screen_readings(readings: Iterable[tuple[str, str, bool]]) -> Screening:
    """Prohibited-content matches in other readings of parts of the content, each (where, text, whether it is
    HTML): what template code could write for some member (`templating.every_branch`), the texts its code holds
    (`templating.constant_texts`). Each reading is screened apart, so no phrase is made across two. Matches
    only: what a reading hides is refused from the content as written and as the sample member gets it."""
    return Screening(matches=_matches(readings)[0], refusals=())


def _matches(parts: Iterable[tuple[str, str | None, bool]]) -> tuple[tuple[Match, ...], list[Refusal]]:
    """The matches in these parts (where, text, whether it is HTML), one per category, rule and part, and
    the refusals of the HTML ones."""
    found: list[Match] = []
    refusals: list[Refusal] = []
    urls: list[str] = []
    for where, text, is_html in parts:
        if not text:
            continue
        if is_html:
            reader = _HtmlReader()
            reader.read(_without_template_comments(text))
            text = _BLOCK_BREAKS.sub(_block_break, "".join(reader.text))
            urls.extend(reader.links)
            refusals.extend(reader.refusals)
        override = _OVERRIDES.search(text)
        if override:
            refusals.append(Refusal(_reason(_R_REVERSED, what=_OVERRIDE_NAMES[override.group()]), where,
                                    _snippet(text[max(0, override.start() - 40):override.end() + 80])))
        clean = _INVISIBLE.sub("", text)
        found.extend(_text_matches(_Folded(clean), where))
        urls.extend(_text_urls(clean))
    for url in dict.fromkeys(urls):  # after the texts': a stable order, parts first; each URL once
        found.extend(_link_matches(url))
    matches: list[Match] = []
    seen: set[tuple[str, str, str]] = set()
    for match in found:
        key = (match.category, match.rule, match.where)
        if key not in seen:
            seen.add(key)
            matches.append(match)
    return tuple(matches[:MAX_MATCHES]), refusals
