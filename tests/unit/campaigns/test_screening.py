"""Content screening, pure: prohibited categories in English and Latvian, link domains, false-positive traps, and the
content that hides the unsubscribe link or footer (PRODUCT.md, "Content and industries" and "Every message")."""

from __future__ import annotations

import html
import unicodedata

import pytest

from herald_campaigns.screening import CATEGORIES, MAX_MATCHES, Match, Screening, screen, screen_readings


def scan(text: str = "", *, subject: str = "News", preheader: str | None = None,
         html_body: str | None = None) -> Screening:
    return screen(subject=subject, preheader=preheader, html_body=html_body, text_body=text)


def categories(result: Screening) -> set[str]:
    return {match.category for match in result.matches}


def refused_for(html_body: str) -> list[str]:
    return [refusal.reason for refusal in screen(subject="News", preheader=None, html_body=html_body,
                                                 text_body="News").refusals]


# (language, campaign text, the categories it matches)
CAMPAIGNS = [
    ("en", "Hot singles in your area are waiting: live sex cams, no signup.", {"adult"}),
    ("en", "Discreet escort service in Riga, 24/7.", {"adult"}),
    ("lv", "Eskorta pakalpojumi Rīgā visu diennakti, diskrēti.", {"adult"}),
    ("lv", "Seksa video un erotiskā masāža tikai pieaugušajiem.", {"adult"}),
    ("en", "Buy weed and cocaine with discreet delivery to your door.", {"drugs"}),
    ("lv", "Piedāvājam narkotikas un kokaīnu ar piegādi.", {"drugs"}),
    ("en", "Photoshop 2025 full version crack and keygen, free.", {"pirated_software"}),
    ("lv", "Lejupielādē uzlauztu programmu Office un atslēgu ģeneratoru.", {"pirated_software"}),
    ("en", "Step-by-step guide: how to make a bomb from household items.", {"weapons"}),
    ("lv", "Instrukcija: kā izgatavot spridzekli no mājas ķīmijas.", {"weapons"}),
    ("en", "Exclusive preteen model galleries, members only.", {"minors"}),
    ("lv", "Pārdodam nepilngadīgo kailbildes.", {"minors", "adult"}),
    ("en", "Buy email lists: 2 million verified email addresses, B2B email lists by industry.", {"mailing_lists"}),
    ("lv", "Pārdodam e-pasta adreses: 500 000 aktīvu kontaktu Latvijā.", {"mailing_lists"}),
    ("lv", "Klientu datubāze pārdošanā, iegādājies epasta kontaktus šodien.", {"mailing_lists"}),
    ("en", "Cheap Viagra and Cialis from our Canadian pharmacy, no prescription needed.", {"pharmacy"}),
    ("lv", "Interneta aptieka: pretsāpju tabletes bez receptes ar piegādi.", {"pharmacy"}),
    ("lv", "Potences tabletes un viagru var pasūtīt bez ārsta receptes.", {"pharmacy"}),
    ("en", "Our new fat burner and keto diet pills: lose 10 kg in 14 days!", {"supplements"}),
    ("lv", "Uztura bagātinātāji un tievēšanas tabletes ar 30% atlaidi.", {"supplements"}),
    ("en", "Your weekly horoscope and a free numerology reading.", {"horoscopes"}),
    ("lv", "Tavs nedēļas horoskops un numeroloģijas padomi.", {"horoscopes"}),
    ("en", "Work from home and earn $500 a day, no experience needed!", {"work_from_home"}),
    ("en", "Make money online with our simple system. Be your own boss.", {"work_from_home"}),
    ("lv", "Darbs no mājām: pelni līdz 300 € dienā!", {"work_from_home"}),
    ("lv", "Strādā no mājām un nopelni 1000 eiro mēnesī.", {"work_from_home"}),
    ("en", "Payday loans approved in 5 minutes. Bad credit OK! Consolidate your debts today.",
     {"credit_debt_mortgage"}),
    ("en", "Refinance your mortgage at the lowest rate.", {"credit_debt_mortgage"}),
    ("en", "Borrow up to $5,000 today, loans up to 10000 EUR.", {"credit_debt_mortgage"}),
    ("lv", "Ātrais kredīts bez ķīlas līdz 5000 eiro, piesakies kredītam tagad!", {"credit_debt_mortgage"}),
    ("lv", "Ātro kredītu un hipotekāro kredītu refinansēšana vienā dienā.", {"credit_debt_mortgage"}),
    ("en", "I earn a commission through my ClickBank affiliate link below.", {"affiliate"}),
    ("lv", "Filiāļu mārketings: pelni ar partneru saitēm.", {"affiliate"}),
    ("en", "Day trading signals and penny stock picks with guaranteed monthly returns.", {"day_trading"}),
    ("lv", "Dienas tirdzniecības signāli un binārās opcijas ar garantētu peļņu.", {"day_trading"}),
    ("en", "Sieg heil! Death to immigrants.", {"hate"}),
    ("lv", "Nāvi imigrantiem! Zemcilvēki nav gaidīti.", {"hate"}),
    ("en", "Fake passports and replica watches shipped worldwide.", {"illegal_goods"}),
    ("lv", "Viltotas pases un kontrabandas cigaretes par labu cenu.", {"illegal_goods"}),
    ("en", "To open the invoice, disable your antivirus and enable macros to view it.", {"malware"}),
    ("lv", "Lai atvērtu rēķinu, atslēdziet antivīrusu un iespējojiet makro.", {"malware"}),
    ("en", "Online casino welcome pack: 100 free spins and a no deposit bonus.", {"gambling"}),
    ("lv", "Kazīno bonuss un 50 bezmaksas griezieni, sporta likmes ar labākajiem koeficientiem!", {"gambling"}),
    ("lv", "Azartspēles tiešsaistē: online kazino ar džekpotu.", {"gambling"}),
    ("en", "Join our network marketing team: it's not a pyramid scheme, build your downline!", {"mlm"}),
    ("lv", "Tīkla mārketings: pievienojies un piesaisti draugus un pelni!", {"mlm"}),
    ("lv", "Tā nav piramīdas shēma, bet daudzpakāpju mārketings.", {"mlm"}),
    ("en", "Watch movies free online and download full movies via torrent.", {"copyright"}),
    ("lv", "Lejupielādē filmas bez maksas un jaunākos albumus caur torrentu.", {"copyright"}),
    ("en", "Read the full story: bit.ly/3xYzAb", {"link_shortener"}),
    ("lv", "Lasi vairāk: https://tinyurl.com/rudens-akcija", {"link_shortener"}),
    ("en", "Get it here: https://hop.clickbank.net/?affiliate=me&vendor=x", {"affiliate"}),
    ("lv", "Kurss ar atlaidi: https://www.udemy.com/course/python/?couponCode=RUDENS", {"affiliate"}),
    ("en", "Send us your children's names, birthdays and school photos to enter the draw.", {"children_data"}),
    ("lv", "Atsūtiet bērnu vārdus un dzimšanas datus, lai piedalītos izlozē.", {"children_data"}),
    ("en", "Our former partner Jānis, exposed as a fraud: you will pay for this.", {"defamation_harassment"}),
    ("lv", "Tu to vēl nožēlosi. Mēs tevi atradīsim un visi uzzinās.", {"defamation_harassment"}),
]


@pytest.mark.parametrize(("language", "text", "expected"), CAMPAIGNS)
def test_campaign_texts_match_their_prohibited_categories(language: str, text: str, expected: set[str]) -> None:
    assert categories(scan(text)) == expected


def test_every_category_fires_in_english_and_in_latvian() -> None:
    for language in ("en", "lv"):
        covered = set().union(*(expected for lang, _, expected in CAMPAIGNS if lang == language))
        assert covered == set(CATEGORIES), (language, set(CATEGORIES) - covered)


@pytest.mark.parametrize("text", [
    "Stay for the end credits: the credits roll includes a surprise.",
    "Photo credit: Anna Ozola.",
    "Earn 6 course credits in our spring semester.",
    "Credit card accepted at our store; we also take cash.",
    "Start your free trial, no credit card required.",
    "Find us at Riga Pharmacy Street 5, right next to the pharmacy.",
    "Join us for a Casino Royale screening at the cinema on Friday.",
    "Book a photo shooting with our studio.",
    "Visit the drugstore on the corner for sunscreen.",
    "Extended trading hours during the holidays.",
    "Back in stock: stock up on winter tyres.",
    "Adult education courses start in September.",
    "A better alphabet book for kids: you bet they'll love it.",
    "Weed control for your garden: our spring guide.",
    "We are hiring a designer. The role is hybrid: work from home two days a week, salary from 2500 EUR.",
    "We will never sell your email address or rent our mailing list.",
    "Protect your team from ransomware with our new backup feature.",
    "Our social network marketing course for small businesses.",
    "The heroine of our new novel travels to Riga.",
    "Ambient music night at the gallery.",
    "Don't gamble with your data: back it up.",
    "Sunglasses without a prescription, now 20% off.",
    "Our bakery makes 300 a day and we earn your trust every morning.",
    "Apmeklējiet mūs Aptiekas ielā 5, blakus aptiekai.",
    "Procentu likmes ir samazinātas, nodokļu likmes nemainās.",
    "Nedēļas akcijas: rudzu maize -20%, akciju cenas spēkā līdz svētdienai.",
    "Norēķināties var ar kredītkarti vai skaidrā naudā.",
    "Studentiem 6 kredītpunkti par kursu.",
    "Pieaugušo izglītības kursi sākas septembrī.",
    "Kūka bez receptes: mūsu konditori improvizē!",
    "Filma Kazino Royale kino vakarā piektdien.",
    "Mūsu komanda strādā no mājām divas dienas nedēļā.",
    "Granātābolu sula un granāta rotas jaunajā kolekcijā.",
    "Foto sesija studijā un tirdzniecības centra darba laiks.",
    "Mēs nekad nepārdodam jūsu e-pasta adresi.",
    "Free shipping and guaranteed returns within 30 days.",
    "Low stock alerts and faster stock picking in the warehouse app.",
    "Our Christmas Day tradition: gingerbread for everyone.",
    "Insider tips for visiting Riga this winter.",
    "Borrow up to 10 books at once from the library.",
    "Never enable macros in unexpected attachments, and never disable your antivirus.",
    "Why you should never buy email lists, and how to grow yours with double opt-in.",
    "Our ethical hacking services and DDoS protection service, now in Latvia.",
    "How to spot counterfeit money and what to do about stolen cards.",
    "Protect your laptop from keyloggers, remote access trojans and ransomware.",
    "Stop gambling: free and confidential help is available.",
    "Watch movies online with your Go3 subscription.",
    "Aizņemies līdz 5 grāmatām bibliotēkā.",
    "Naudas atmazgāšanas novēršana: jaunās prasības bankām.",
    "Uzmanieties no viltotām banknotēm un zagtām kartēm.",
    "DDoS uzbrukumi pieaug, aizsargājiet savu vietni.",
    "Atgriez preci un saņem ātri naudu atpakaļ.",
])
def test_false_positive_traps_pass_clean(text: str) -> None:
    assert scan(text).matches == ()


@pytest.mark.parametrize(("written", "category"), [
    ("kazino bonuss", "gambling"), ("kazīno bonuss", "gambling"), ("KAZĪNO BONUSI", "gambling"),
    ("ātrais kredīts", "credit_debt_mortgage"), ("atrais kredits", "credit_debt_mortgage"),
    ("ātro kredītu", "credit_debt_mortgage"), ("ātrajiem kredītiem", "credit_debt_mortgage"),
    ("kredītu bez ķīlas", "credit_debt_mortgage"), ("kreditus bez kilas", "credit_debt_mortgage"),
    ("interneta aptieka", "pharmacy"), ("interneta aptiekā", "pharmacy"), ("interneta aptiekas", "pharmacy"),
    ("zāles bez receptes", "pharmacy"), ("zales bez receptes", "pharmacy"),
    ("darbs no mājām, pelni", "work_from_home"), ("darbs no majam, pelni", "work_from_home"),
    ("horoskops", "horoscopes"), ("horoskopu", "horoscopes"), ("numeroloģija", "horoscopes"),
    ("numerologija", "horoscopes"), ("uztura bagātinātāji", "supplements"), ("uztura bagatinataju", "supplements"),
    ("piramīdas shēma", "mlm"), ("piramidas shemas", "mlm"), ("tīkla mārketings", "mlm"),
    ("tikla marketingu", "mlm"), ("sporta likmes", "gambling"), ("azartspēles", "gambling"),
    ("azartspēļu", "gambling"), ("azartspeles", "gambling"), ("narkotikas", "drugs"), ("narkotiku", "drugs"),
    ("e-pasta adreses pārdošanā", "mailing_lists"), ("epasta adreses pardosana", "mailing_lists"),
    ("Via\u00adgra", "pharmacy"), ("vi\u200bagra", "pharmacy"),
])
def test_latvian_inflections_and_spellings_with_or_without_diacritics_match(written: str, category: str) -> None:
    assert category in categories(scan(written))


def test_a_match_says_what_was_written_where_and_which_rule() -> None:
    result = screen(subject="ĀTRAIS KREDĪTS tikai šodien", preheader=None, html_body=None, text_body="Sveiki")
    assert result.matches == (Match(category="credit_debt_mortgage", matched="ĀTRAIS KREDĪTS", where="subject",
                                    rule="ātr* {kredīt*|aizdevum*}"),)
    assert result.flagged and not result.refused


def test_matches_name_where_they_were_found_in_a_stable_order() -> None:
    result = screen(subject="Free spins inside", preheader="Your horoscope", text_body="Cheap viagra, bit.ly/x",
                    html_body='<p>Online <b>ca</b>sino</p><a href="https://www.jvzoo.com/c/1/2">go</a>')
    assert [(m.where, m.category) for m in result.matches] == [
        ("subject", "gambling"), ("preheader", "horoscopes"), ("html_body", "gambling"), ("text_body", "pharmacy"),
        ("link", "affiliate"), ("link", "link_shortener")]
    assert result.matches[2].matched == "Online casino"  # inline tags do not split words
    assert result == screen(subject="Free spins inside", preheader="Your horoscope", text_body="Cheap viagra, bit.ly/x",
                            html_body='<p>Online <b>ca</b>sino</p><a href="https://www.jvzoo.com/c/1/2">go</a>')


def test_the_same_rule_in_the_same_place_is_reported_once_and_matches_are_capped() -> None:
    once = scan("Viagra! viagra, VIAGRA.", subject="viagra")
    assert [(m.where, m.rule) for m in once.matches] == [("subject", "viagr*"), ("text_body", "viagr*")]
    words = ("viagra cialis levitra kamagra xanax valium tramadol oxycodone adderall warez keygen nulled forex "
             "horoscope tarot numerology mlm ponzi clickbank jvzoo gambling sportsbook hentai")
    many = screen(subject=words, preheader=words, html_body=f"<p>{words}</p>", text_body=words)
    assert len(many.matches) == MAX_MATCHES
    assert all(len(m.matched) <= 200 for m in many.matches)


def test_image_alt_text_is_screened_and_long_links_are_cut_to_200_characters() -> None:
    result = scan(html_body='<img src="https://bit.ly/' + "a" * 500 + '" alt="Online casino">')
    assert categories(result) == {"gambling", "link_shortener"}
    assert all(len(m.matched) <= 200 for m in result.matches)


# Link targets: (URL, (category, rule) or None)
LINKS = [
    ("https://hop.clickbank.net/?affiliate=me", ("affiliate", "clickbank.net")),
    ("https://VENDOR.HOP.CLICKBANK.NET/", ("affiliate", "clickbank.net")),
    ("https://www.jvzoo.com/c/123/456", ("affiliate", "jvzoo.com")),
    ("https://warriorplus.com/o2/a/abc/0", ("affiliate", "warriorplus.com")),
    ("https://www.digistore24.com/redir/123/me/", ("affiliate", "digistore24.com")),
    ("https://www.udemy.com/course/python/?couponCode=FREE2026", ("affiliate",
                                                                   "udemy.com with a coupon or affiliate code")),
    ("https://click.linksynergy.com/deeplink?id=x&mid=39197&murl=https%3A%2F%2Fwww.udemy.com",
     ("affiliate", "linksynergy.com")),
    ("https://www.shareasale.com/r.cfm?b=1&u=2", ("affiliate", "shareasale.com")),
    ("https://www.anrdoezrs.net/click-123-456", ("affiliate", "anrdoezrs.net")),
    ("https://www.awin1.com/cread.php?awinmid=1", ("affiliate", "awin1.com")),
    ("https://www.amazon.de/dp/B000?tag=myblog-21", ("affiliate", "amazon with an Associates tag=")),
    ("https://bit.ly/3abc", ("link_shortener", "bit.ly")),
    ("http://www.bit.ly/3abc", ("link_shortener", "bit.ly")),
    ("HTTPS://BIT.LY/x", ("link_shortener", "bit.ly")),
    ("https://bit.ly./x", ("link_shortener", "bit.ly")),
    ("//bit.ly/x", ("link_shortener", "bit.ly")),
    ("http:\\\\bit.ly\\x", ("link_shortener", "bit.ly")),
    ("htt\tps://bit\n.ly/x", ("link_shortener", "bit.ly")),
    ("https://someone@bit.ly/x", ("link_shortener", "bit.ly")),
    ("https://t.co/abc", ("link_shortener", "t.co")),
    ("https://tinyurl.com/y4", ("link_shortener", "tinyurl.com")),
    ("https://amzn.to/3x", ("link_shortener", "amzn.to")),
    ("https://rb.gy/x", ("link_shortener", "rb.gy")),
    ("https://downloads.example/invoice.exe", ("malware", "link to an executable file (.exe)")),
    ("https://www.udemy.com/course/python/", None),
    ("https://www.amazon.de/dp/B000", None),
    ("https://bit.ly.evil.example/x", None),
    ("https://notbit.ly/x", None),
    ("https://evil.example/bit.ly", None),
    ("https://evil.example/?u=https://bit.ly/x", None),
    ("https://bit.ly@evil.example/x", None),
    ("https://microsoft.co/x", None),
    ("https://notclickbank.net/x", None),
    # not clickbank.net, but its label "clickbank" is the affiliate network's name read as a word
    ("https://clickbank.net.example/x", ("affiliate", "clickbank")),
    ("mailto:info@bit.ly", None),
    ("{{ unsubscribe_url }}", None),
    ("https://rudzurasa.example/jaunumi", None),
]


@pytest.mark.parametrize(("url", "expected"), LINKS)
def test_link_targets_are_checked_by_domain_and_subdomain(url: str, expected: tuple[str, str] | None) -> None:
    result = scan(html_body=f'<p>Hello</p><a href="{html.escape(url)}">Read more</a>')
    found = [(m.category, m.rule) for m in result.matches if m.where == "link"]
    assert found == ([expected] if expected else [])
    if expected:
        assert next(m for m in result.matches if m.where == "link").matched == url.replace("\t", "").replace("\n", "")


@pytest.mark.parametrize(("text", "expected"), [
    ("Details: bit.ly/abc.", [("link_shortener", "bit.ly/abc")]),
    ("(see https://www.clickbank.net/x)", [("affiliate", "https://www.clickbank.net/x")]),
    ("www.tinyurl.com/abc and cutt.ly/x", [("link_shortener", "www.tinyurl.com/abc"), ("link_shortener", "cutt.ly/x")]),
    ("Write to info@bit.ly or visit rudzurasa.example.", []),
    ("Sveiki.Mūsu jaunumi, e.g. this.", []),
])
def test_urls_written_in_the_text_are_checked_too(text: str, expected: list[tuple[str, str]]) -> None:
    found = [(m.category, m.matched) for m in scan(text, subject=text).matches if m.where == "link"]
    assert found == expected


BAKERY = """<html><head><style>
  body { margin:0; background:#fdf6ec; }
  .preheader { display:none !important; }
  @media (max-width:600px) { .hide-mobile { display:none !important; } td[class=hide] { display:none; } }
  @keyframes fade { from { opacity:0 } to { opacity:1 } }
</style></head><body>
<div class="preheader">Svaigi cepta maize katru rītu</div>
<h1>Maiznīcas "Rudzu Rasa" jaunumi</h1>
<p>Šonedēļ akcijas: rudzu maize -20 %, kanēļmaizītes 3 par 2 &euro;. Procentu likmes mūs neskar!</p>
<p>Jaunums: ābolu pīrāgs pēc vecmāmiņas receptes. Kūka bez receptes? Mūsu konditori improvizē!</p>
<p>Norēķināties var ar kredītkarti. Mūs atradīsiet Aptiekas ielā 5, blakus aptiekai.
<p class="hide-mobile"><img src="https://rudzurasa.example/logo.png" alt="Rudzu Rasa logo"></p>
<p>Ja vairs nevēlaties saņemt vēstules, <a href="{{ unsubscribe_url }}">atrakstieties šeit</a>.</p>
</body></html>"""

SAAS = """<html><body style="background:#ffffff">
<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">What's new in Acme Analytics this month</div>
<table width="600"><tr><td style="padding:24px;color:#222222">
<h2>Product update: dashboards, credits and more</h2>
<p>Dashboards now load twice as fast. We fixed the API credits counter and added photo credits to the library.</p>
<p>Our support desk has extended trading hours, and the new sensors are back in stock.</p>
<p>Start a free trial, no credit card required. Read the <a href="https://docs.acme.example/changelog">changelog</a>.</p>
<p><a href="https://acme.example/webinar" style="background:#0066cc;color:#ffffff;padding:8px">Join the webinar</a></p>
</td></tr></table>
<p style="font-size:12px;color:#888888">You get this because you signed up at acme.example.
<a href="{{unsubscribe_url}}">Unsubscribe</a> or <a href="https://acme.example/preferences">manage preferences</a>.</p>
</body></html>"""


# What an email builder (MJML) writes: resets, Outlook conditional comments, a hidden preview, font-size:0 wrappers.
BUILDER = """<!doctype html><html><head><title></title><!--[if !mso]><!--><meta http-equiv="X-UA-Compatible"
content="IE=edge"><!--<![endif]--><style type="text/css">#outlook a { padding:0; }
body { margin:0;padding:0;-webkit-text-size-adjust:100%; } table, td { border-collapse:collapse; }
img { border:0;height:auto;line-height:100%;outline:none;text-decoration:none; } p { display:block;margin:13px 0; }
a[x-apple-data-detectors] { color:inherit !important; font-size:inherit !important; }
@media only screen and (min-width:480px) { .mj-column-per-100 { width:100% !important; max-width:100%; } }
@media (prefers-color-scheme: dark) { .dark-bg { background:#111111 !important; } a { color:#ffffff !important; } }
span.preheader { display:none !important; }</style><!--[if mso]><noscript><xml><o:OfficeDocumentSettings>
<o:PixelsPerInch>96</o:PixelsPerInch></o:OfficeDocumentSettings></xml></noscript><![endif]--></head>
<body style="word-spacing:normal;"><div style="display:none;font-size:1px;color:#ffffff;line-height:1px;
max-height:0px;max-width:0px;opacity:0;overflow:hidden;">Autumn news from the shop</div><div style="">
<!--[if mso | IE]><table align="center" role="presentation" style="width:600px;"><tr><td
style="line-height:0px;font-size:0px;"><![endif]--><div style="margin:0px auto;max-width:600px;"><table
role="presentation" style="width:100%;"><tbody><tr><td style="direction:ltr;font-size:0px;padding:20px 0;">
<div class="mj-column-per-100" style="font-size:0px;display:inline-block;width:100%;"><table role="presentation"
width="100%"><tbody><tr><td align="left" style="font-size:0px;padding:10px 25px;"><div style="font-family:arial;
font-size:13px;line-height:1;color:#000000;">New knitwear is in. <a href="{{ unsubscribe_url }}">Unsubscribe</a>
</div></td></tr></tbody></table></div></td></tr></tbody></table></div><!--[if mso | IE]></td></tr></table>
<![endif]--></div></body></html>"""


# A magazine with a web font (what builders link from Google Fonts), cards cut to a height and clamped lines, a
# rotated badge, a caption bar over its picture, CSS bullets, a background image and a srcset: all closed before
# the footer, none over the page.
MAGAZINE = """<!doctype html><html><head><!--[if !mso]><!--><link href="https://fonts.googleapis.com/css?family=Lora:400,700"
rel="stylesheet" type="text/css"><style type="text/css">@import url(https://fonts.googleapis.com/css?family=Lora:400,700);
</style><!--<![endif]--><style>
  body { margin:0; height:100% !important; width:100% !important; background:#f4f1ea; font-family:Lora,Georgia,serif; }
  .card { max-height:320px; overflow:hidden; border-radius:8px; background:#ffffff; }
  .teaser { display:-webkit-box; -webkit-line-clamp:3; -webkit-box-orient:vertical; overflow:hidden; }
  .badge { display:inline-block; transform:rotate(-4deg) translateY(-2px); background:#c0392b; color:#ffffff; }
  .hero { position:relative; }
  .hero .caption { position:absolute; bottom:0; left:0; width:100%; height:48px; background:#000000; color:#fff; }
  ul.ticks li::before { content:"\\2713  "; color:#2e7d32; }
  @media only screen and (max-width:480px) { .card { max-height:none !important; } }
</style></head><body>
<table width="600" align="center" background="https://cdn.rudzurasa.example/paper.jpg"><tr><td>
<div class="hero"><img src="https://cdn.rudzurasa.example/hero.jpg" srcset="https://cdn.rudzurasa.example/hero.jpg 1x,
https://cdn.rudzurasa.example/hero@2x.jpg 2x" alt="Autumn loaves" width="600">
<div class="caption">Rye season is here</div></div>
<div class="card" style="max-height:320px;overflow:hidden"><span class="badge">New</span>
<h2>Ten ways with rye</h2><p class="teaser">From crispbread to kvass: our bakers share what they do with the season's
rye, and why a slow sourdough matters more than any recipe.</p>
<ul class="ticks"><li>Baked every morning</li><li>Order by noon, collect by five</li></ul></div>
<div style="transform:translateX(-12px);height:40px;overflow:hidden"><a
href="https://rudzurasa.example/shop?q=rye+bread&amp;utm_source=newsletter">Shop rye bread</a></div>
</td></tr></table>
<p style="font-size:12px;color:#666666">You are receiving this because you joined at rudzurasa.example.
<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>"""


@pytest.mark.parametrize(("subject", "html_body"), [("Maiznīcas jaunumi", BAKERY), ("Product update", SAAS),
                                                    ("Autumn news", BUILDER), ("Rye season", MAGAZINE)])
def test_a_clean_newsletter_has_no_matches_and_no_refusals(subject: str, html_body: str) -> None:
    result = screen(subject=subject, preheader="Jaunumi", html_body=html_body, text_body="Sveiki! Hello!")
    assert result == Screening(matches=(), refusals=())
    assert not result.flagged and not result.refused


UNSUBSCRIBE = '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'

# (HTML body, the start of the refusal's reason or None)
REFUSALS = [
    # <style> rules that could reach the footer
    ("<style>div { display:none }</style><p>Hi</p>", "A <style> rule (div) hides content with display:none"),
    ("<style>* { font-size:0 !important }</style><p>Hi</p>", "A <style> rule (*) hides content with font-size:0"),
    ("<style>a { color:#fff !important }</style><p>Hi</p>", "A <style> rule (a) hides content with color:#fff"),
    ("<style>body > div:last-child { visibility:hidden }</style><p>Hi</p>", "A <style> rule (body > div:last-child)"),
    ("<style>div:not(.x) { opacity:0 }</style><p>Hi</p>", "A <style> rule (div:not(.x))"),
    ("<style>@media screen { a[href] { position:absolute; left:-9999px } }</style><p>Hi</p>", "A <style> rule"),
    ('<style>.wrap { visibility:hidden }</style><div class="wrap"><p>Hi</p>', "A <style> rule (.wrap)"),
    ("<style>.preheader { display:none }</style><p>Hi</p>", None),
    ("<style>@media (max-width:600px) { .hide-mobile { display:none } }</style><p>Hi</p>", None),
    ("<style>td[class=hide] { display:none } h1 { font-size:0 }</style><p>Hi</p>", None),
    ("<style>@keyframes fade { from { opacity:0 } to { opacity:1 } }</style><p>Hi</p>", None),
    ("<style>body { background:#000 } a { color:#fff }</style><p>Hi</p>", None),
    ("<style>a { color:#0066cc } p { margin:0 }</style><p>Hi</p>", None),
    ("<style>@media (prefers-color-scheme: dark) { .dark { background:#111 } a { color:#fff } }</style><p>Hi</p>",
     None),
    # an element that hides its content is still open where the footer goes
    ('<p>Hi</p><div style="display:none">secret', "This element hides its content (display:none)"),
    ('<body><p>Hi</p><div style="font-size:0">x</div><span style="font-size:1px">y</body>',
     "This element hides its content (font-size:1px)"),
    ('<body style="visibility:hidden"><p>Hi</p></body>', "This element hides its content (visibility:hidden)"),
    ('<p>Hi</p><div style="max-height:0;overflow:hidden">x', "This element hides its content (max-height:0"),
    ('<p>Hi</p><div style="color:#ffffff">x', "This element hides its content (text colour #ffffff"),
    ('<p>Hi</p><div style="display:none"/>', "This element hides its content (display:none)"),
    ("<p>Hi</p><div hidden>", "This element hides its content (the hidden attribute)"),
    ("<p>Hi</p><details><summary>More</summary>", "This element hides its content (a closed <details>)"),
    ('<p>Hi</p><div style="display:none">preview</div>', None),
    ('<p style="display:none">preview<div>Hello</div>', None),
    ('<table><tr><td><div style="display:none">x</td></tr></table><p>Hi</p>', None),
    ('<p>Hi</p><details open><summary>More</summary>', None),
    ('<p>Hi</p><div style="line-height:1;overflow:hidden">x', None),
    ('<p>Hi</p><div style="line-height:0;overflow:hidden">x', "This element hides its content (line-height:0"),
    # moved off the page, faded out with a filter, or cut to any height while the footer goes inside it
    ('<p>Hi</p><div style="transform:translateX(-9999px)"><p>more</p>',
     "This element hides its content (transform:translatex(-9999px))"),
    ('<p>Hi</p><div style="transform:translate(-200vw)"><p>more</p>',
     "This element hides its content (transform:translate(-200vw))"),
    ('<p>Hi</p><div style="transform:translateY(100%)"><p>more</p>', "This element hides its content (transform:"),
    ('<p>Hi</p><div style="translate:0 -9999px"><p>more</p>', "This element hides its content (translate:0 -9999px)"),
    ('<p>Hi</p><div style="filter:opacity(0)"><p>more</p>', "This element hides its content (filter:opacity(0))"),
    ('<p>Hi</p><div style="-webkit-filter:opacity(3%)"><p>more</p>', "This element hides its content (-webkit-filter"),
    ('<p>Hi</p><div style="max-height:20px;overflow:hidden"><p>more</p>',
     "This element hides its content (max-height:20px with overflow:hidden)"),
    ('<body style="height:100%;overflow:hidden"><p>Hi</p></body>',
     "This element hides its content (height:100% with overflow:hidden)"),
    ('<p>Hi</p><div style="-webkit-line-clamp:2;display:-webkit-box;overflow:hidden"><p>more</p>',
     "This element hides its content (-webkit-line-clamp:2"),
    ('<p>Hi</p><div style="transform:translate(-50%, -20px)">x</div>'
     '<div style="max-height:80px;overflow:hidden">x</div><div style="filter:opacity(0.8)">x</div>', None),
    ('<p>Hi</p><div style="height:300px;overflow-x:hidden">x', None),  # a box one scrolls, cutting nothing off
    ('<p>Hi</p><div style="max-height:none;overflow:hidden">x', None),
    # drawn over the page, wherever it sits
    ('<p>Hi</p><div style="position:absolute;top:0;left:0;width:100%;height:100%;background:#fff"></div>',
     "This element is drawn over the page (position:absolute over the whole page with background #ffffff)"),
    ('<p>Hi</p><div style="position:fixed;bottom:0;left:0;right:0;height:80px;background:#ffffff"></div>',
     "This element is drawn over the page (position:fixed with background #ffffff)"),
    ('<p>Hi</p><img src="https://acme.example/white.png" style="position:fixed;bottom:0;left:0;width:100%">',
     "This element is drawn over the page (position:fixed with an image)"),
    ('<div style="position:relative"><img src="https://acme.example/a.jpg" alt="">'
     '<div style="position:absolute;bottom:0;left:0;width:100%;height:40px;background:#000;color:#fff">Sale</div>'
     '</div><p>Hi</p>', None),
    ('<p>Hi</p><div style="position:fixed;top:0;right:0">x</div>', None),  # nothing drawn: the page shows through
    # the same in a <style> rule, and style sheets that cannot be screened
    ("<style>body { max-height:40px; overflow:hidden }</style><p>Hi</p>",
     "A <style> rule (body) hides content with max-height:40px with overflow:hidden"),
    ("<style>html { visibility:hidden }</style><p>Hi</p>", "A <style> rule (html) hides content with visibility"),
    ("<style>div { height:24px; overflow:hidden }</style><p>Hi</p>", "A <style> rule (div) hides content with height"),
    ("<style>body > div { transform:translateX(-9999px) }</style><p>Hi</p>",
     "A <style> rule (body > div) hides content with transform:translatex(-9999px)"),
    ("<style>[style] { filter:opacity(0) }</style><p>Hi</p>", "A <style> rule ([style]) hides content with filter"),
    ('<style>body::after { content:""; position:fixed; top:0; left:0; width:100%; height:100%; background:#fff }'
     "</style><p>Hi</p>", "A <style> rule (body::after) draws an element over the page (position:fixed with "
                          "background #ffffff)"),
    ('<style>.x::before { position:absolute; inset:0; background:url(https://acme.example/w.png) }</style>'
     '<p class="x">Hi</p>',
     "A <style> rule (.x::before) draws an element over the page (position:absolute over the whole page"),
    ('<style>@import url("https://evil.example/hide.css");</style><p>Hi</p>',
     "An external style sheet (@import) cannot be screened"),
    ("<style>@\\69mport 'https://evil.example/hide.css';</style><p>Hi</p>",
     "An external style sheet (@import) cannot be screened"),
    ('<link rel="stylesheet" href="https://evil.example/h.css"><p>Hi</p>',
     "An external style sheet (<link rel=stylesheet>) cannot be screened"),
    ('<LINK REL="alternate Stylesheet" HREF="//evil.example/h.css"><p>Hi</p>', "An external style sheet (<link"),
    ("<style>.card { max-height:200px; overflow:hidden }</style><p>Hi</p>", None),
    ('<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Lora"><p>Hi</p>', None),
    ('<link rel="icon" href="https://acme.example/favicon.ico"><p>Hi</p>', None),
    # what the footer would be inside of: an open comment, an unfinished tag, an element never displayed
    ("<p>Hi</p><!-- note", "An HTML comment (<!--) is not closed"),
    ("<html><body><p>Hi</p><!-- </body> --></body></html>", "An HTML comment (<!--) is not closed"),
    ('<p>Hi</p><img alt="</body>">', "The body ends inside an unfinished tag"),
    ("<p>Hi</p><template>", "The <template> element is not closed"),
    ("<p>Hi</p><textarea>", "The <textarea> element is not closed"),
    ("<p>Hi</p><style>p { color:red }", "The <style> element is not closed"),
    ("<!-- note --><p>Hi</p>", None),
    ("<template><p>x</p></template><p>Hi</p>", None),
    # the unsubscribe link or wording hidden
    (f'<div style="display:none">{UNSUBSCRIBE}</div>', "The unsubscribe link or wording is inside an element that "
                                                       "hides it (display:none)"),
    ('<div style="position:absolute;left:-9999px"><a href="{{unsubscribe_url}}">x</a></div>',
     "The unsubscribe link or wording is inside an element that hides it (left:-9999px)"),
    ('<span style="opacity:0">To unsubscribe click below</span>', "The unsubscribe link or wording is inside"),
    ('<div style="height:0;overflow:hidden">Atrakstīties var šeit</div>', "The unsubscribe link or wording is inside"),
    ('<p style="color:#ffffff">Opt out: <a href="{{ unsubscribe_url }}">here</a></p>',
     "The unsubscribe link or wording is inside an element that hides it (text colour #ffffff"),
    ('<p>Hi</p><a href="{{ unsubscribe_url }}" style="color:#fefefe">Unsubscribe</a>',
     "The unsubscribe link or wording is inside an element that hides it (text colour #fefefe"),
    ('<table><tr><td bgcolor="#000000"><font color="#000">atteikties no jaunumiem</font></td></tr></table>',
     "The unsubscribe link or wording is inside an element that hides it (text colour #000000"),
    ('<details><summary>Info</summary><a href="{{ unsubscribe_url }}">x</a></details>',
     "The unsubscribe link or wording is inside an element that hides it (a closed <details>)"),
    ('<td style="font-size:0px"><div style="display:inline-block"><a href="{{ unsubscribe_url }}">x</a></div></td>',
     "The unsubscribe link or wording is inside an element that hides it (font-size:0px)"),
    ('<div style="visibility:hidden"><span>Unsubscribe here</span></div>',
     "The unsubscribe link or wording is inside an element that hides it (visibility:hidden)"),
    (f'<p style="color:#555555">You can unsubscribe: {UNSUBSCRIBE}</p>', None),
    # what is inherited can be set again inside: MJML's font-size:0 wrappers, a visible part of a hidden block
    (f'<td style="font-size:0px"><div style="font-size:13px;color:#000000">Hi {UNSUBSCRIBE}</div></td>', None),
    (f'<div style="visibility:hidden">x<p style="visibility:visible">{UNSUBSCRIBE}</p></div>', None),
    (f'<div style="display:none">x</div><div style="opacity:0.9">{UNSUBSCRIBE}</div>', None),
    ('<table><tr><td style="background:#222;color:#fff"><a href="{{ unsubscribe_url }}" style="color:#fff">'
     "Unsubscribe</a></td></tr></table>", None),
    (f'<div style="display:none">Preview text</div><p>{UNSUBSCRIBE}</p>', None),
    # CSS written by template code cannot be screened (a value can add ";position:fixed" over the footer)
    ('<div style="color:{{ brand_colour }}">Hi</div>', "Template code inside CSS (a style attribute)"),
    # a second, fake unsubscribe link
    ('<a href="https://evil.example/unsub">Unsubscribe</a>', "A link that reads as an unsubscribe link goes to "
                                                             "'https://evil.example/unsub'"),
    ('<a href="https://x.example">Atteikties no jaunumiem</a>', "A link that reads as an unsubscribe link"),
    ('<a href="mailto:stop@shop.example">Opt-out</a>', "A link that reads as an unsubscribe link"),
    ('<a href="#">atsakīties</a>', "A link that reads as an unsubscribe link"),
    ('<a href="https://x.example"><img src="https://x.example/u.png" alt="Unsubscribe"></a>',
     "A link that reads as an unsubscribe link"),
    ('<a href="https://x.example">Pārtraukt abonementu</a>', "A link that reads as an unsubscribe link"),
    ('<a href="{{unsubscribe_url}}">Atrakstīties</a>', None),
    ('<a href="https://shop.example/subscribe">Subscribe to our shop</a>', None),
    ('<a href="https://shop.example/preferences">Manage preferences</a>', None),
]


@pytest.mark.parametrize(("html_body", "reason"), REFUSALS)
def test_content_hiding_or_faking_the_unsubscribe_link_or_footer_is_refused(html_body: str,
                                                                           reason: str | None) -> None:
    reasons = refused_for(html_body)
    if reason is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and reasons[0].startswith(reason), reasons


def test_a_refusal_shows_the_author_what_and_where() -> None:
    [refusal] = screen(subject="News", preheader=None, text_body="News",
                       html_body='<p>Hi</p><div style="display:none" class="x">' + "secret " * 100).refusals
    assert refusal.where == "html_body"
    assert refusal.matched == '<div style="display:none" class="x">'
    assert "Close it with </div>" in refusal.reason
    [style] = screen(subject="News", preheader=None, text_body="News",
                     html_body="<style>div {\n  display: none;\n}</style>").refusals
    assert style.matched == "div {display: none;}"
    assert "preheader" in style.reason


def test_a_big_body_is_screened_whole() -> None:
    row = ('<tr><td style="padding:4px;color:#333333"><p>Fresh bread every morning from our bakery, '
           '<a href="https://rudzurasa.example/order">order now</a> &amp; enjoy a <b>warm</b> croissant.</p></td></tr>')
    body = "<html><body><table>" + row * 2000 + "</table><p>Online casino!</p></body></html>"
    assert len(body) > 250_000
    result = screen(subject="News", preheader=None, html_body=body, text_body="Fresh bread " * 20_000)
    assert [(m.category, m.where) for m in result.matches] == [("gambling", "html_body")]
    assert result.refusals == ()


def test_deeply_nested_and_broken_html_is_screened_without_error() -> None:
    nested = "<div>" * 5000 + "Hello" + "</span>" * 100
    assert screen(subject="News", preheader=None, html_body=nested, text_body="x").refusals == ()
    broken = '<p>Hi</p><a href="https://bit.ly/x" style="color:rgba(0,0,0' + "x" * 10_000
    assert screen(subject="News", preheader=None, html_body=broken, text_body="x").refused


# (HTML body, a (category, where) it must match): what a client loads or a reader follows, and text CSS shows
SCREENED_TARGETS = [
    ('<form action="https://hop.clickbank.net/"><button>Order</button></form>', ("affiliate", "link")),
    ('<form><button formaction="https://hop.clickbank.net/">Order</button></form>', ("affiliate", "link")),
    ('<form><input type="submit" formaction="https://bit.ly/abc" value="Go"></form>', ("link_shortener", "link")),
    ('<table background="https://bit.ly/abc"><tr><td>Hello</td></tr></table>', ("link_shortener", "link")),
    ('<img srcset="https://cdn.acme.example/a.png 1x, https://bit.ly/abc 2x" alt="">', ("link_shortener", "link")),
    ('<picture><source srcset="https://tinyurl.com/y4"><img src="a.png" alt=""></picture>', ("link_shortener", "link")),
    ('<video poster="https://bit.ly/abc"></video><p>Hi</p>', ("link_shortener", "link")),
    ("<td style=\"background:url('https://bit.ly/abc')\">Hello</td>", ("link_shortener", "link")),
    ("<style>.hero { background-image:url(//bit.ly/abc) }</style><p>Hi</p>", ("link_shortener", "link")),
    ('<style>.hero { background:url("https://hop.clickbank.net/x.png") }</style><p>Hi</p>', ("affiliate", "link")),
    ('<style>.x::after { content:"buy viagra" }</style><p class="x">Hi</p>', ("pharmacy", "html_body")),
    ('<style>.x::after { content:"\\76 iagra" }</style><p class="x">Hi</p>', ("pharmacy", "html_body")),
    ("<style>.x::after { content:'online ca' 'sino' }</style><p class=x>Hi</p>", ("gambling", "html_body")),
    ('<p style="content:&quot;buy viagra&quot;">Hi</p>', ("pharmacy", "html_body")),
    ('<a href="https://shop.example/?q=online+casino">Play</a>', ("gambling", "link")),
    ('<a href="https://shop.example/search?q=online%20casino&amp;page=2">Play</a>', ("gambling", "link")),
    ('<img src="https://cdn.shop.example/buy-viagra.png" alt="">', ("pharmacy", "link")),
]


@pytest.mark.parametrize(("html_body", "expected"), SCREENED_TARGETS)
def test_every_link_target_and_the_text_css_shows_are_screened(html_body: str, expected: tuple[str, str]) -> None:
    """README: link targets are screened, whatever attribute or CSS names them; a phrase in a query string is
    read as one in the path; CSS `content` strings are text a reader sees (PRODUCT.md, "Content and industries")."""
    result = scan(html_body=html_body)
    assert expected in {(m.category, m.where) for m in result.matches}, result.matches
    assert result.refusals == ()


def test_a_phrase_in_a_query_string_is_shown_with_the_link_it_is_in() -> None:
    [match] = scan(html_body='<a href="https://shop.example/?q=online+casino">Play</a>').matches
    assert match == Match("gambling", "https://shop.example/?q=online+casino", "link", "online casino*")


@pytest.mark.parametrize("url", [
    "https://cinema.example/films?title=casino+royale&utm_source=newsletter&utm_campaign=autumn_sale",
    "https://bank.example/help/credit-card-payments?lang=lv",
    "https://shop.example/products?category=adult+education&sort=price",
])
def test_innocent_paths_and_query_strings_pass_clean(url: str) -> None:
    assert scan(html_body=f'<a href="{html.escape(url)}">More</a>').matches == ()


@pytest.mark.parametrize(("html_body", "expected"), [
    # an element opened outside a condition and closed inside one: stays open for some subscribers
    ('<p>Hello {{ first_name }}</p><div style="display:none">{% if first_name == "zz" %}</div>{% endif %}</body>',
     "opened and closed on different sides"),
    ("<p>Hi</p>{% if city %}<div>{% else %}<span>{% endif %}", "opened and closed on different sides"),
    # where the body ends must not depend on the subscriber
    ('{% if false %}</body>{% endif %}<p>Hi</p><div style="display:none">', "</body> inside a template condition"),
    # CSS written by template code cannot be screened
    ('{% set c = "div{display:none}" %}<style>{{ c }}</style><p>Hello</p></body>', "Template code inside CSS"),
    ('{% set s = "display:none" %}<div style="{{ s }}"><p>Hi</p></div>', "Template code inside CSS"),
    ('<div style="color:{{ colour }}"><p>Hi</p></div>', "Template code inside CSS"),
    # template code writing attributes into a tag
    ('<div {% if first_name == "zz" %}hidden{% endif %}><p>Hi</p></div>', "Template code inside an HTML tag"),
    ("<div {{ attributes }}><p>Hi</p></div>", "Template code inside an HTML tag"),
    # a template comment is nothing: a </body> in it does not end the body early
    ('<p>Hi</p>{# </body> #}<div style="display:none">', "not closed before the end of the body"),
])
def test_template_code_that_could_hide_the_footer_is_refused(html_body: str, expected: str) -> None:
    refusals = screen(subject="News", preheader=None, html_body=html_body, text_body=None).refusals
    assert any(expected in r.reason for r in refusals), refusals


@pytest.mark.parametrize("html_body", [
    "{% if first_name %}<p>Hi {{ first_name }}</p>{% else %}<p>Hi there</p>{% endif %}",
    "<table><tr><td>{% if vip %}<b>Gold</b>{% elif city %}<i>{{ city }}</i>{% endif %}</td></tr></table>",
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a> <img src="https://acme.example/logo.png" alt="{{ company }}">',
    "{% if a %}<p>one{% else %}<p>two{% endif %}<ul>{% if b %}<li>x{% endif %}</ul>",
    "<p>{{ first_name }}{# a note to ourselves #}</p>{% set greeting = 'Hi' %}<p>{{ greeting }}</p>",
])
def test_template_conditions_holding_whole_elements_pass(html_body: str) -> None:
    assert screen(subject="News", preheader=None, html_body=html_body, text_body=None).refusals == ()


@pytest.mark.parametrize(("html_body", "category"), [
    ("<p>Cheap vi\u0430gra</p>", "pharmacy"),  # a Cyrillic a
    ("<p>Cheap \uff56\uff49\uff41\uff47\uff52\uff41</p>", "pharmacy"),  # fullwidth letters
    ("<p>Cheap via\u034fgra</p>", "pharmacy"),  # the combining grapheme joiner shows nothing
    ("<p>Cheap via\u2061gra</p>", "pharmacy"),  # nor does an invisible operator
    ('<a href="https://bit%2Ely/x">x</a>', "link_shortener"),  # a percent-escaped dot in the host
    ('<a href="https://bit\u3002ly/y">y</a>', "link_shortener"),  # an ideographic full stop
    ('<a href="https://\uff42\uff49\uff54.ly">z</a>', "link_shortener"),  # fullwidth host letters
])
def test_lookalike_letters_invisible_characters_and_hosts_a_browser_maps_are_read_as_what_they_show(
        html_body: str, category: str) -> None:
    matches = screen(subject="News", preheader=None, html_body=html_body, text_body=None).matches
    assert category in {m.category for m in matches}, matches


@pytest.mark.parametrize("written", [
    "v\u0131agra",  # a dotless i
    "vi\u0301agra",  # an i and a combining acute accent
    "\U0001d42f\U0001d422\U0001d41a\U0001d420\U0001d42b\U0001d41a",  # mathematical bold letters
    "\U0001d4cb\U0001d4be\U0001d4b6\u210a\U0001d4c7\U0001d4b6",  # mathematical script letters
    "v\u1ecbagra",  # Latin Extended Additional: i with a dot below
    "\u1d20\u026a\u1d00\u0262\u0280\u1d00",  # small capitals
    "\u24e5\u24d8\u24d0\u24d6\u24e1\u24d0",  # circled letters
    "V\u0130AGRA",  # a capital I with a dot above
    "v\u0338i\u0330a\u0360gra",  # combining overlays and marks below
    "vi\u0251gr\u0251",  # Latin alpha
])
def test_lookalike_letters_and_combining_marks_read_as_the_latin_letters_they_show(written: str) -> None:
    """README "Rules": screening reads text as it shows; each of these passed as "something else" before."""
    for result in (scan(f"Buy {written} now"), scan(subject=f"Cheap {written}"),
                   scan(html_body=f"<p>Buy {written} now</p>")):
        assert [m.rule for m in result.matches] == ["viagr*"], (written, result.matches)


@pytest.mark.parametrize("phrase", ["ātrais kredīts", "sporta likmes", "online kazīno", "uztura bagātinātāji",
                                    "online ca\u0301sino"])
def test_decomposed_text_is_read_as_its_composed_form(phrase: str) -> None:
    """Latvian typed or pasted in decomposed form (NFD: "a" and a combining macron) is the same text."""
    composed, decomposed = unicodedata.normalize("NFC", phrase), unicodedata.normalize("NFD", phrase)
    assert categories(scan(decomposed)) == categories(scan(composed)) != set()


def test_the_evidence_is_the_text_as_written_whatever_folds_before_or_inside_it() -> None:
    """A match points at what the author wrote, also when characters before it fold into more or fewer."""
    text = "\ufb01ne \ufb02owers, cafe\u0301 \u2460 \u00bd price: online ca\u0301sino\u0301! Ro\u0301ses."
    [match] = scan(text).matches
    assert match.matched == "online ca\u0301sino\u0301"
    [match] = scan("\U0001d41b\U0001d42e\U0001d432 \U0001d42f\U0001d422\U0001d41a\U0001d420\U0001d42b\U0001d41a "
                   "today").matches
    assert match.matched == "\U0001d42f\U0001d422\U0001d41a\U0001d420\U0001d42b\U0001d41a"


@pytest.mark.parametrize("text", [
    "Rīgas kafejnīcā šodien ķiršu kūka un zaļā tēja.",  # Latvian, NFC and NFD below
    unicodedata.normalize("NFD", "Jāņos dziedam līgo dziesmas, ēdam sieru un dzeram alu."),
    # Turkish: dotless and dotted i
    "Iğd\u0131r ve Ağr\u0131'dan selamlar: k\u0131ş\u0131n Iş\u0131l ile buluşal\u0131m.",
    "Łódź, Øresund, Đakovo: ﬁne ﬂowers ™ ½ ① for 5 €.",
    # mathematical bold "New collection", small capitals "all sizes"
    "\U0001d40d\U0001d41e\U0001d430 \U0001d41c\U0001d428\U0001d425\U0001d425\U0001d41e\U0001d41c\U0001d42d"
    "\U0001d422\U0001d428\U0001d427 in \u1d00\u029f\u029f \ua731\u026a\u1d22\u1d07\ua731",
])
def test_folding_more_letters_adds_no_false_positives(text: str) -> None:
    assert scan(text).matches == ()


def test_why_not_is_an_offer_not_advice_against() -> None:
    assert categories(scan("Why not viagra? Why not try an online casino?")) == {"pharmacy", "gambling"}
    assert scan("Stop gambling: not online casino nights, not slot machines.").matches == ()


def test_the_sender_name_and_addresses_are_screened_as_parts_of_their_own() -> None:
    """The recipient reads the sender's name before anything else: it is content too."""
    result = screen(subject="News", preheader=None, html_body=None, text_body="Hello",
                    from_name="Online Casino Bonus - Cheap V\u0131agra", from_email="cheap-viagra@shop.example",
                    reply_to="free-spins@shop.example")
    assert {(m.where, m.category) for m in result.matches} == {
        ("from_name", "gambling"), ("from_name", "pharmacy"), ("from_email", "pharmacy"), ("reply_to", "gambling")}
    assert screen(subject="News", preheader=None, html_body=None, text_body="Hello", from_name="Rudzu Rasa bakery",
                  from_email="news@rudzurasa.example", reply_to="help@rudzurasa.example").matches == ()


def test_alt_and_title_texts_are_screened_with_the_html_body() -> None:
    for html_body in ('<p>Hi</p><img src="https://x.example/a.png" alt="Buy viagra online">',
                      '<p>Hi <span title="Online casino: free spins">there</span></p>'):
        assert {m.where for m in scan(html_body=html_body).matches} == {"html_body"}, html_body


def test_other_readings_are_screened_apart_for_matches_only() -> None:
    """What template code could write (every branch, its constants) flags; it never refuses, and no phrase is
    made across two readings."""
    result = screen_readings([("html_body", '<div style="display:none"><p>online casino</p>', True),
                              ("subject", "cheap", False), ("subject", "viagra", False),
                              ("subject", "online", False), ("subject", "casino", False)])
    assert [(m.where, m.category) for m in result.matches] == [("html_body", "gambling"), ("subject", "pharmacy")]
    assert result.refusals == ()
