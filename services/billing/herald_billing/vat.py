"""Who an invoice's VAT concerns, pure: ISO country codes, the EU member states and the formats of their VAT
numbers. Formats only: VIES, the Commission's service that says whether a number is registered, is not reachable
from Herald, so a well-formed number nobody holds is taken."""

from __future__ import annotations

import re
from dataclasses import dataclass

# ISO 3166-1 alpha-2: the 249 officially assigned codes (as the tz database's iso3166.tab lists them).
COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC
CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD
GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH
KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW
MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC
SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY
UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split())

# The seller's country: the platform is a Latvian company, and its VAT is Latvia's.
SELLER_COUNTRY = "LV"

# The EU's 27 member states (since 1 February 2020), each with the format of its VAT numbers after the prefix
# (the Commission's VIES list of formats). Greece's prefix is EL, not its ISO code GR. The French overseas
# departments and Åland have codes of their own here and are outside the EU's VAT area; the Canary Islands,
# Ceuta and Melilla, Mount Athos and the like are outside it too, but share their country's code: not told apart.
VAT_NUMBER_FORMATS: dict[str, tuple[str, str, str]] = {
    # country: (prefix, the rest as a regular expression, the rest in words)
    "AT": ("AT", r"U[0-9]{8}", "U and 8 digits"),
    "BE": ("BE", r"[01][0-9]{9}", "10 digits, the first 0 or 1"),
    "BG": ("BG", r"[0-9]{9,10}", "9 or 10 digits"),
    "CY": ("CY", r"[0-9]{8}[A-Z]", "8 digits and a letter"),
    "CZ": ("CZ", r"[0-9]{8,10}", "8 to 10 digits"),
    "DE": ("DE", r"[0-9]{9}", "9 digits"),
    "DK": ("DK", r"[0-9]{8}", "8 digits"),
    "EE": ("EE", r"[0-9]{9}", "9 digits"),
    "ES": ("ES", r"[0-9A-Z][0-9]{7}[0-9A-Z]", "9 characters, the first and last a letter or a digit"),
    "FI": ("FI", r"[0-9]{8}", "8 digits"),
    "FR": ("FR", r"[0-9A-HJ-NP-Z]{2}[0-9]{9}", "2 characters (digits or letters but I and O) and 9 digits"),
    "GR": ("EL", r"[0-9]{9}", "9 digits"),
    "HR": ("HR", r"[0-9]{11}", "11 digits"),
    "HU": ("HU", r"[0-9]{8}", "8 digits"),
    "IE": ("IE", r"[0-9]{7}[A-W][A-I]?|[0-9][A-Z+*][0-9]{5}[A-W]", "8 or 9 characters"),
    "IT": ("IT", r"[0-9]{11}", "11 digits"),
    "LT": ("LT", r"[0-9]{9}|[0-9]{12}", "9 or 12 digits"),
    "LU": ("LU", r"[0-9]{8}", "8 digits"),
    "LV": ("LV", r"[0-9]{11}", "11 digits"),
    "MT": ("MT", r"[0-9]{8}", "8 digits"),
    "NL": ("NL", r"[0-9]{9}B[0-9]{2}", "9 digits, B and 2 digits"),
    "PL": ("PL", r"[0-9]{10}", "10 digits"),
    "PT": ("PT", r"[0-9]{9}", "9 digits"),
    "RO": ("RO", r"[1-9][0-9]{1,9}", "2 to 10 digits"),
    "SE": ("SE", r"[0-9]{10}01", "12 digits ending in 01"),
    "SI": ("SI", r"[0-9]{8}", "8 digits"),
    "SK": ("SK", r"[0-9]{10}", "10 digits"),
}
EU_MEMBER_STATES = frozenset(VAT_NUMBER_FORMATS)
_FORMATS = {country: re.compile(prefix + f"(?:{rest})", re.ASCII)
            for country, (prefix, rest, _) in VAT_NUMBER_FORMATS.items()}
_SEPARATORS = re.compile(r"[\s.\-]")


@dataclass(frozen=True)
class Party:
    """Who an invoice is from or to: the legal name, the address lines, the country (ISO 3166-1 alpha-2) and the
    VAT number (with its prefix; None: none given)."""

    name: str
    address: tuple[str, ...]
    country: str
    vat_number: str | None = None


class VatNumberInvalid(ValueError):
    """Not a VAT number of the country; the message says the format expected."""


def normalise_vat_number(number: str) -> str:
    """As printed and compared: upper case, without the spaces, dots and dashes people write in it."""
    return _SEPARATORS.sub("", number).upper()


def check_vat_number(country: str, number: str) -> str:
    """The number normalised, if it has the format of the country's VAT numbers, with its prefix; VatNumberInvalid
    saying the format otherwise. Only EU member states have a format here."""
    expected = VAT_NUMBER_FORMATS.get(country)
    if expected is None:
        raise VatNumberInvalid(f"VAT numbers are taken for EU member states only; {country} is not one: leave it "
                               "out")
    prefix, _, words = expected
    normalised = normalise_vat_number(number)
    if not _FORMATS[country].fullmatch(normalised):
        raise VatNumberInvalid(f"not a VAT number of {country}: {prefix} followed by {words} (spaces, dots and "
                               "dashes are left out)")
    return normalised
