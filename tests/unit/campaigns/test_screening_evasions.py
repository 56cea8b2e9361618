"""Content screening, pure: what a reader still reads as prohibited although it is spelled apart, hidden behind a
link's neutral text or said in other words (PRODUCT.md, "Content and industries"; services/campaigns/README.md,
"Rules"), and the ordinary text those readings must leave clean."""

from __future__ import annotations

import html

import pytest

from herald_campaigns import screening
from herald_campaigns.screening import Match, Screening, screen


def scan(text: str | None = None, *, html_body: str | None = None, subject: str = "News") -> Screening:
    return screen(subject=subject, preheader=None, html_body=html_body, text_body=text)


def found(result: Screening) -> set[tuple[str, str]]:
    return {(match.category, match.matched) for match in result.matches}


# --- a link's host --------------------------------------------------------------------------------------------

# (URL, (category, rule)): a neutral link text over a betting, casino or pharmacy host
HOSTS = [
    ("https://www.bet365.com/", ("gambling", "bet365.com")),
    ("https://sports.bet365.com/en/", ("gambling", "bet365.com")),
    ("https://www.888casino.com/welcome", ("gambling", "888casino.com")),
    ("https://www.williamhill.com/", ("gambling", "williamhill.com")),
    ("https://optibet.lv/lv/kazino", ("gambling", "optibet.lv")),
    ("https://www.canadadrugs.com/", ("pharmacy", "canadadrugs.com")),
    ("https://online-casino.example/", ("gambling", "online casino*")),
    ("https://viagra-direct.example/", ("pharmacy", "viagr*")),
    ("https://viagra4less.example/refill", ("pharmacy", "viagr*")),
    ("https://www.unibet.ee/", ("gambling", "unibet")),  # a brand of the phrases under any top-level domain
    ("https://play.online.casino/", ("gambling", "online casino*")),  # a match may end in the top-level label
    ("https://interneta-aptieka.example/", ("pharmacy", "{interneta|tiešsaistes|online} aptiek*")),
]


@pytest.mark.parametrize(("url", "expected"), HOSTS)
def test_a_link_to_a_betting_casino_or_pharmacy_host_is_flagged_whatever_its_text(
        url: str, expected: tuple[str, str]) -> None:
    """The reader clicking "Claim your welcome gift" lands there: with the author's own text part, the host was
    never read (from a review: bet365.com, online-casino.example and viagra-direct.example were scheduled)."""
    result = scan("Claim your welcome gift: see the button in the HTML version",
                  html_body=f'<p><a href="{html.escape(url)}">Claim your welcome gift</a></p>')
    assert [(m.category, m.rule) for m in result.matches] == [expected]
    assert result.matches[0] == Match(expected[0], url, "link", expected[1])


@pytest.mark.parametrize("host", ["therapist.example", "sextant.example", "essex.ac.uk", "analytics.example",
                                  "scunthorpe.gov.uk", "www.casino-royale-film.example", "betterbakery.example",
                                  "pharmacy-street.example", "shop.porn", "a1-bakery.example", "bet.example",
                                  "rudzurasa.lv", "www.credit-union.example", "adult-education.example"])
def test_hosts_whose_labels_only_contain_a_listed_word_pass_clean(host: str) -> None:
    """A host's labels are words with word boundaries ("essex" holds no "sex"); the top-level label alone is no
    match (`.porn` names a registry)."""
    assert scan("Hello", html_body=f'<p><a href="https://{host}/news">Read more</a></p>').matches == ()


def test_a_host_in_the_text_part_is_read_as_words_too() -> None:
    result = scan("Play tonight: online-casino.example/tonight")
    assert ("link", "online casino*") in {(m.where, m.rule) for m in result.matches}


def test_a_listed_brand_is_reported_once_by_its_domain() -> None:
    result = scan("Hello", html_body='<a href="https://www.pokerstars.com/">Play</a>')
    assert [(m.category, m.rule) for m in result.matches] == [("gambling", "pokerstars.com")]


# --- spelled apart --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("V.i.a.g.r.a and C.i.a.l.i.s, 80% off, shipped discreetly",
     {("pharmacy", "V.i.a.g.r.a"), ("pharmacy", "C.i.a.l.i.s")}),
    ("V I A G R A 50mg - 80% off, no doctor visit", {("pharmacy", "V I A G R A")}),
    ("V-I-A-G-R-A, v_i_a_g_r_a", {("pharmacy", "V-I-A-G-R-A")}),
    ("Cheap v*i*a*g*r*a tonight", {("pharmacy", "v*i*a*g*r*a")}),
    ("Play at our o-n-l-i-n-e c-a-s-i-n-o", {("gambling", "o-n-l-i-n-e c-a-s-i-n-o")}),
    ("Order V1agra and C1alis today", {("pharmacy", "V1agra"), ("pharmacy", "C1alis")}),
    ("Online c@sino. A ca$ino b0nus!", {("gambling", "Online c@sino"), ("gambling", "ca$ino b0nus")}),
    ("V.1.a.g.r.a", {("pharmacy", "V.1.a.g.r.a")}),
    ("Buy V I \u0410 G R A now", {("pharmacy", "V I \u0410 G R A")}),  # a Cyrillic A, spaced out
])
def test_letters_spaced_out_or_written_with_digits_read_as_the_word_and_show_as_written(
        text: str, expected: set[tuple[str, str]]) -> None:
    """From a review: `V.i.a.g.r.a`, `V I A G R A 50mg`, `V1agra` read plainly as the drug and were scheduled."""
    for result in (scan(text), scan(html_body=f"<p>{html.escape(text)}</p>"), scan(subject=text)):
        assert found(result) == expected, result.matches


@pytest.mark.parametrize("text", [
    "J. R. R. Tolkien reads at 18:00 on 2026-12-07 in the U.S.A. and the U.K.",
    "Options a b c, sizes S M L XL, grades A-B-C, N.A.T.O. summit, R.S.V.P. by Friday.",
    "Rate us 1 2 3 4 5 stars; call 2 0 2 6; steps 1-2-3-4.",
    "s.e.x.t.a.n.t, t-h-e-r-a-p-i-s-t, a.n.a.l.y.t.i.c.s, e s s e x",
    "50mg, 2026, 10% off, $500, US$500, 3D printer, 4x4, 24/7 support.",
    "Win10, MP3, covid19, B2B, Q4, A1 paper, F1, i5, IPv4, H1N1, x86, utf8, sha256, v1.2.3.",
    "Write to info@acme.example or sales@rudzurasa.example, t.sk. PVN, u.c., a/s Latvijas Gāze.",
])
def test_initials_acronyms_codes_and_numbers_pass_clean(text: str) -> None:
    assert scan(text).matches == ()


# --- words split by block elements ----------------------------------------------------------------------------

@pytest.mark.parametrize("html_body", [
    "<div>Online ph</div><div>armacy</div>",
    "<p>Online ph<br>armacy</p>",
    "<table><tr><td>Online ph</td><td>armacy</td></tr></table>",
    "<div>Buy via</div><div>gra</div>",
])
def test_a_word_split_across_block_elements_is_read_joined(html_body: str) -> None:
    """A reader sees "Online ph / armacy" on two lines and reads the word; inline tags were joined already."""
    assert {m.category for m in scan(html_body=html_body).matches} == {"pharmacy"}


def test_a_joined_word_shows_the_lines_as_written() -> None:
    [match] = scan(html_body="<div>Online ph</div><div>armacy</div>").matches
    assert match == Match("pharmacy", "Online ph armacy", "html_body", "{online|internet|canadian|mexican} pharmac*")


@pytest.mark.parametrize("html_body", [
    "<p>Win a trip to the casino</p><p>of Monte Carlo, by train.</p>",
    "<p>Ask our therapist</p><p>about stress.</p>",
    "<h1>Meet our Hero</h1><p>In stock now</p>",
    "<h1>Meet our hero</h1><p>in stock now</p>",  # a paragraph that starts with a function word
    "<ul><li>hero</li><li>in stock</li></ul>",
    "<p>Via</p><p>Gra Nord</p>",
])
def test_paragraphs_headings_and_cells_are_not_joined_into_words(html_body: str) -> None:
    assert scan(html_body=html_body).matches == ()


# --- vocabulary -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "category"), [
    ("Join our casino tonight: 200% welcome bonus on your first deposit!", "gambling"),
    ("A 200% welcome bonus at our new casino.", "gambling"),
    ("Our casino has 50 spins waiting for you", "gambling"),
    ("Reģistrējies mūsu kazino un saņem 50 griezienus!", "gambling"),
    ("Registrejies musu kazino un sanem 50 griezienus!", "gambling"),
    ("Saņem 100 griezienus mūsu kazīno!", "gambling"),
    ("Kazino piedāvā depozīta dubultošanu.", "gambling"),
    ("Riga escorts, discreet, 24/7.", "adult"),
    ("VIP escorts available in Jūrmala", "adult"),
    ("Independent escorts, call now", "adult"),
    ("Discreet escort, incall and outcall", "adult"),
    ("Eskorts Rīgā, diskrēti un 24/7.", "adult"),
])
def test_casino_offers_and_escorts_as_a_service_are_flagged(text: str, category: str) -> None:
    """From a review: each of these was scheduled without staff review."""
    assert {m.category for m in scan(text).matches} == {category}


@pytest.mark.parametrize("text", [
    "Casino Royale screening at the cinema, with a bonus short film.",
    "Our casino-themed party. Bonus: free parking.",
    "Police escort for the parade route; please escort the children to the bus.",
    "Security escorts available 24/7 for cash transport.",
    "Ford Escort for sale, one owner.",
    "A police escort will accompany the convoy 24/7.",
    "Available 24/7: armed escorts for cash in transit.",
    "Policijas eskorts pavadīs kolonnu 24/7.",
    "Riga escorts the tall ships into the harbour.",
])
def test_casino_and_escort_in_their_ordinary_senses_pass_clean(text: str) -> None:
    assert scan(text).matches == ()


# --- cost -----------------------------------------------------------------------------------------------------

def test_the_respelled_reading_is_tried_only_near_what_it_changed() -> None:
    """Screening stays linear: in a long text, one spelled-apart word costs a window around it, not a second
    reading of the whole text; changes everywhere cost one more reading, not one per change."""
    text = "Fresh bread every morning from our bakery. " * 2000
    one = screening._Folded(text + " V1agra " + text).respelled()
    assert one is not None and sum(high - low for low, high in one.windows) <= screening._RESPELLED_REACH + 10
    everywhere = screening._Folded("V1agra bread, c.a.k.e. " * 5000).respelled()
    assert everywhere is not None and everywhere.windows == [(0, len(everywhere.folded))]
    assert screening._Folded(text).respelled() is None


# --- text drawn reversed ------------------------------------------------------------------------------------------

# Stored reversed, drawn forwards (Chromium: "online casino", "VIAGRa", "cheap viagra"), while screening reads the
# stored order: refused, so the author writes it in the order it is read.
@pytest.mark.parametrize(("part", "body"), [
    ("html_body", "<p>Today only: \u202eonisac enilno\u202c \u202eaRGAIV\u202c</p>"),
    ("html_body", "<p>&#x202E;argaiv paehc&#x202C;</p>"),
    ("html_body", '<p style="direction:rtl;unicode-bidi:bidi-override;text-align:left">argaiv paehc</p>'),
    ("html_body", '<p style="direction:rtl;unicode-bidi:isolate-override">argaiv paehc</p>'),
    ("html_body", "<style>.r{direction:rtl;unicode-bidi:bidi-/**/overrid\\65}</style><p class=r>argaiv paehc</p>"),
    ("html_body", '<p><bdo dir="rtl">argaiv paehc</bdo></p>'),
    ("html_body", '<svg><text unicode-bidi="bidi-override" direction="rtl">argaiv</text></svg>'),
    ("html_body", '<img src="x.png" alt="\u202eargaiv paehc">'),
    ("text_body", "Today only: \u202eonisac enilno\u202c"),
    ("subject", "\u202dargaiv paehc"),
])
def test_text_whose_letters_are_drawn_reversed_is_refused(part: str, body: str) -> None:
    content = {"subject": "News", "html_body": None, "text_body": None, part: body}
    result = screen(subject=content["subject"] or "", preheader=None, html_body=content["html_body"],
                    text_body=content["text_body"])
    assert [(r.where, r.reason.startswith("Text drawn in another order")) for r in result.refusals] == [(part, True)]


# Right-to-left newsletters as builders write them: dir and direction:rtl, unicode-bidi embed/isolate/plaintext,
# the isolates (U+2066-U+2069), embeddings and marks, a Latin brand and number inside. None of these reverses a
# Latin word (Chromium draws it as stored), so none is refused.
HEBREW = ('<html dir="rtl" lang="he"><body style="direction:rtl;unicode-bidi:embed;font-family:Arial">'
          '<h1>\u05d7\u05d3\u05e9\u05d5\u05ea \u05d4\u05d7\u05d5\u05d3\u05e9</h1>'
          '<p>\u05de\u05d1\u05e6\u05e2 \u05de\u05d9\u05d5\u05d7\u05d3: \u2066Herald Mail\u2069 '
          '\u05d1-\u200e20%\u200e \u05d4\u05e0\u05d7\u05d4 \u05e2\u05d3 \u2068\u202b31.12\u202c\u2069</p>'
          '<p style="unicode-bidi:isolate;text-align:right"><span dir="ltr">www.acme.example</span></p>'
          '<p style="unicode-bidi:plaintext">\u05dc\u05d4\u05e1\u05e8\u05d4 \u05de\u05d4\u05e8\u05e9\u05d9\u05de\u05d4 '
          '<a href="{{ unsubscribe_url }}">\u05dc\u05d7\u05e6\u05d5 \u05db\u05d0\u05df</a></p></body></html>')
ARABIC = ('<div dir="rtl" style="direction:rtl;text-align:right">'
          '<h2>\u0639\u0631\u0648\u0636 \u0627\u0644\u0634\u062a\u0627\u0621</h2>'
          '<p>\u062e\u0635\u0645 \u2067\u0663\u0660\u066a\u2069 \u0639\u0644\u0649 \u2066iPhone 16\u2069 '
          '\u0641\u064a \u0645\u062a\u062c\u0631\u0646\u0627 \u200f<a href="https://shop.example/ar">'
          '\u062a\u0633\u0648\u0642 \u0627\u0644\u0622\u0646</a></p></div>')


@pytest.mark.parametrize("body", [HEBREW, ARABIC], ids=["hebrew", "arabic"])
def test_right_to_left_newsletters_pass(body: str) -> None:
    result = scan("\u05d7\u05d3\u05e9\u05d5\u05ea \u2066Herald\u2069", html_body=body)
    assert result.refusals == () and result.matches == ()
