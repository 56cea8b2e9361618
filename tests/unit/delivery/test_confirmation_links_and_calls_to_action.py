"""A confirmation email holds only the request to confirm: no advertising, no other call to action (PRODUCT.md
"Lists and subscribers"). A name holding anything a mail client makes a link (a domain whatever its labels, a URL,
an e-mail address, "www.") or an imperative to buy, order, call or visit is not named in it."""

from __future__ import annotations

import pytest

from herald_delivery.domain import plain_label


@pytest.mark.parametrize("name", [
    # domains whose label before the top-level domain ends in a digit, or is all digits
    "Shop24.com", "220.lv", "a1.lv", "Pigu 123.lv", "SHOP24.COM", "Shop24.com.", "news from 220.lv today",
    # several labels, hyphens, IDN and punycode, a non-Latin top-level domain
    "sub.domain.co.uk", "my-shop.example", "xn--80ak6aa92e.com", "shop.xn--p1ai", "bücher.de", "магазин.рф",
    # a dot IDNA reads as one, fullwidth letters (read in NFKC form)
    "shop。com", "shop｡com", "\uff33\uff48\uff4f\uff50\uff12\uff14\uff0e\uff43\uff4f\uff4d",  # Shop24.com in fullwidth
    # URLs, addresses, www in any case
    "https://shop.example", "HTTP://x", "ftp:\\\\files", "info@shop.lv", "WWW.shop", "Www.Shop", "www。shop",
    # calls to action
    "Buy now, best prices in town", "220.lv: Buy now, best prices in town", "Shop now", "Order now", "Order today",
    "Call us", "Call now", "Visit us", "Click here", "Hurry", "Lowest price", "Pērc tagad", "Pērciet",
    "Pasūti šodien", "Zvaniet", "Apmeklējiet mūs",
])
def test_a_name_a_mail_client_makes_a_link_or_that_calls_to_action_is_not_a_plain_label(name: str) -> None:
    assert plain_label(name) is None


@pytest.mark.parametrize("name", [
    # a dot with nothing, one letter or digits after it is no domain
    "v1.2", "No.5", "Chanel No. 5 fans", "Version 1.2 notes", "J.P. Morgan", "Web 2.0", "Acme & Co.", "U.S.A. news",
    "Nr.1 choir", "Riga 2.0",
    # words that only say what a list is about
    "Shop news", "Order of Malta", "Buyers club", "Percussion club", "Call centre staff", "Visitor news",
    "News and offers", "Ziņas un piedāvājumi", "Latvijas Banka",
])
def test_a_dot_that_makes_no_domain_and_words_about_a_list_stay_plain(name: str) -> None:
    assert plain_label(name) == name
