"""Content screening, pure: phrasings a reviewer wrote to get past the word lists (each now flagged under its
category, for staff review), the two categories of PRODUCT.md's list that had no rule (children's data without
consent, defamation or harassment), shortener hosts, a host written as one word, and the ordinary texts these
rules must leave clean. The lists can never be complete (services/campaigns/README.md, "Limits")."""

from __future__ import annotations

import pytest

from herald_campaigns import screening
from herald_campaigns.screening import Screening, screen


def scan(html_body: str) -> Screening:
    return screen(subject="News", preheader=None, html_body=html_body, text_body=None)


def categories(html_body: str) -> set[str]:
    return {match.category for match in scan(html_body).matches}


# The reviewer's bodies (R3, probe A), each sent by an approved account on a paid plan and scheduled unreviewed.
REVIEWED = [
    ("<p>Hot local girls visit your hotel tonight. Discreet, 24/7. Reply to book.</p>", "adult"),
    ("<p>Get weed delivered to your door in 30 minutes. Premium Colombian blow, next-day.</p>", "drugs"),
    ("<p>Photoshop 2025 full version free, no license needed - patch included.</p>", "pirated_software"),
    ("<p>Step-by-step guide to building an IED. Convert your AR-15 to full auto with our kit.</p>", "weapons"),
    ("<p>Young teen girls pics, new every day.</p>", "minors"),
    ("<p>We sell B2B contact databases - 500,000 verified decision makers.</p>", "mailing_lists"),
    ("<p>Buy Ozempic without a doctor's visit. Generic meds at 90% off, shipped from India.</p>", "pharmacy"),
    ("<p>Our keto gummies melt belly fat while you sleep.</p>", "supplements"),
    ("<p>Discover your angel numbers and what the universe is telling you.</p>", "horoscopes"),
    ("<p>Earn $5,000 a month from your kitchen table, no experience needed.</p>", "work_from_home"),
    ("<p>Need cash fast? Borrow €2000 today, approved in 5 minutes. Get a mortgage even with bad credit.</p>",
     "credit_debt_mortgage"),
    ("<p>Use my referral link to get the course and I get paid.</p>", "affiliate"),
    ("<p>This stock will 10x by Friday - buy NOW before it explodes.</p>", "day_trading"),
    ("<p>Immigrants are vermin and must be driven out.</p>", "hate"),
    ("<p>Send us your children's names, birthdays and school photos to enter the draw.</p>", "children_data"),
    ("<p>Real counterfeit euros, undetectable, buy now.</p>", "illegal_goods"),
    ("<p>Download the attached invoice.exe to see what you owe.</p>", "malware"),
    ("<p>Join my team, recruit 3 friends and earn from everyone they bring in.</p>", "mlm"),
    ("<p>Stream the new Marvel movie free here before it hits cinemas.</p>", "copyright"),
    ('<p>Tonight\'s odds are in.</p><a href="https://www.onlinecasino.example/">Play</a>', "gambling"),
    ('<a href="https://cutt.us/spring">Spring sale</a>', "link_shortener"),
    ('<a href="https://shorturl.me/abc">Details</a>', "link_shortener"),
]


@pytest.mark.parametrize(("html_body", "category"), REVIEWED, ids=[c for _, c in REVIEWED])
def test_the_reviewers_phrasings_are_flagged_under_their_category(html_body: str, category: str) -> None:
    assert categories(html_body) == {category}


# The two categories of PRODUCT.md's list that had no rule: phrased as such requests and accusations usually are.
@pytest.mark.parametrize(("text", "category"), [
    ("Send us your children's names, birthdays and school photos to enter the draw.", "children_data"),
    ("Upload your kids' photos and ages to join the club.", "children_data"),
    ("Share your child's date of birth and home address with us for a free gift.", "children_data"),
    ("Tell us the names and birthdays of your children!", "children_data"),
    ("Atsūtiet bērnu vārdus un dzimšanas datus, lai piedalītos izlozē.", "children_data"),
    ("Our former partner Jānis, exposed as a fraud and a thief.", "defamation_harassment"),
    ("The truth about my ex: he is a convicted rapist.", "defamation_harassment"),
    ("We will hunt you down, and your employer will know what you did.", "defamation_harassment"),
    ("You stupid bitch, you will pay for this.", "defamation_harassment"),
    ("Tu to vēl nožēlosi. Mēs tevi atradīsim un visi uzzinās.", "defamation_harassment"),
])
def test_childrens_data_and_defamation_or_harassment_are_flagged(text: str, category: str) -> None:
    assert categories(f"<p>{text}</p>") == {category}


@pytest.mark.parametrize("text", [
    "Check forex exchange rates at our Riga branch.",
    "Forex: our bureau de change at the airport is open 24/7.",
    "Kids' names on the badges: please print them clearly at the camp desk.",
    "Our children's library opens on Saturday with a new school photos exhibition.",
    "We will find you the best seat in the house.",
    "Watch your back posture: our new office chairs.",
    "Watch the trailer before it hits cinemas on Friday.",
    "Recruit 3 friends to our running club and run together.",
    "Our stock will double next week: new winter coats arrive.",
    "The mortgage advice clinic at our branch: book a free call.",
    "Name the new panda: send us your ideas.",
    "Visit https://www.expertsexchange.example/ and https://therapist.example/ for help.",
    "Our new shop: https://www.bestbuy.example/ and https://www.nytimes.com/.",
])
def test_ordinary_texts_near_the_new_rules_pass_clean(text: str) -> None:
    assert scan(f"<p>{text}</p>").matches == ()


@pytest.mark.parametrize("text", [
    "Join our forex signals group and copy our trades.",
    "Forex trading course: learn forex in 7 days.",
    "The best forex robot for 2026.",
])
def test_forex_is_flagged_as_trading_not_as_a_word(text: str) -> None:
    assert categories(f"<p>{text}</p>") == {"day_trading"}


@pytest.mark.parametrize(("url", "rule"), [
    ("https://www.onlinecasino.example/", "online casino*"),
    ("https://onlinepharmacy.lv/", "{online|internet|canadian|mexican} pharmac*"),
    ("https://freespins.example/claim", "{free|bonus} spins"),
    ("https://go.buyweed.example/", "{buy|order} {weed|cannabis|marijuana|drugs}"),
])
def test_a_host_label_written_as_one_word_is_read_as_the_phrase_it_joins(url: str, rule: str) -> None:
    assert [m.rule for m in scan(f'<a href="{url}">Go</a>').matches] == [rule]


@pytest.mark.parametrize("host", ["sporno.example", "cocacola.example", "therapist.example", "expertsexchange.example",
                                  "penisland.example", "sexshop.example", "bonusround.example"])
def test_a_one_word_label_matches_only_across_its_split(host: str) -> None:
    """A listed word inside a label ("porn" in "sporno") is not a phrase a reader makes out of it."""
    assert scan(f'<a href="https://{host}/">Go</a>').matches == ()


def test_the_shortener_list_holds_each_host_once_and_no_brand_short_domain() -> None:
    hosts = screening._SHORTENER_DOMAINS
    assert len(hosts) == len(set(hosts))
    assert not {"youtu.be", "nyti.ms", "go.nasa.gov", "dw.com", "f1.com"} & set(hosts)
