"""Reading a place out of GeoIP records of either layout, and which addresses are looked up (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from herald_delivery.geoip import NOWHERE, GeoLocator, GeoSettingInvalid, Place, place_of


class Records:
    """A reader over a dict; an IPv4-only one refuses IPv6 addresses as maxminddb does."""

    def __init__(self, records: dict[str, Any], ipv4_only: bool = False) -> None:
        self.records = records
        self.ipv4_only = ipv4_only
        self.asked: list[str] = []

    def get(self, ip_address: str) -> Any:
        self.asked.append(ip_address)
        if self.ipv4_only and ":" in ip_address:
            raise ValueError(f"Error looking up {ip_address}. You attempted to look up an IPv6 address in an "
                             "IPv4-only database.")
        return self.records.get(ip_address)


def test_both_record_layouts_give_the_country_and_city() -> None:
    maxmind = {"country": {"iso_code": "LV", "names": {"en": "Latvia"}},
               "city": {"names": {"en": "Riga", "ru": "Рига"}}}
    flat = {"country_code": "lv", "city": "Riga (Centra rajons)", "state1": "Riga"}
    assert place_of(maxmind) == Place("LV", "Riga")
    assert place_of(flat) == Place("LV", "Riga (Centra rajons)")
    assert place_of({"country": {"iso_code": "DE"}}) == Place("DE", None)  # a country-only file


@pytest.mark.parametrize("record", [None, "LV", [], {}, {"country_code": "ZZ"}, {"country_code": "LVA"},
                                    {"country_code": 7, "city": 8}, {"country": "LV"}, {"city": {"names": "Riga"}},
                                    {"country_code": "", "city": "  "}])
def test_records_the_contract_could_not_carry_are_nowhere(record: Any) -> None:
    assert place_of(record) == NOWHERE


def test_a_long_city_name_is_cut_to_what_the_contract_holds() -> None:
    assert place_of({"country_code": "FI", "city": "x" * 300}) == Place("FI", "x" * 100)


def test_each_file_is_asked_in_turn_once_an_address() -> None:
    ipv4 = Records({"85.254.0.1": {"country_code": "LV", "city": "Riga"}, "8.8.8.8": {"country_code": "US"}},
                   ipv4_only=True)
    ipv6 = Records({"2001:4860:4860::8888": {"country_code": "US", "city": "Mountain View"}})
    places = GeoLocator([ipv4, ipv6])
    assert places.locate("85.254.0.1") == Place("LV", "Riga")
    assert places.locate("2001:4860:4860::8888") == Place("US", "Mountain View")
    assert places.locate("::ffff:8.8.8.8") == Place("US", None)
    for unplaced in (None, "", "not an address", "10.0.0.1", "fe80::1"):
        assert places.locate(unplaced) == NOWHERE
    assert places.locate("85.254.0.1") == Place("LV", "Riga")  # again: kept, not asked again
    assert ipv4.asked == ["85.254.0.1", "2001:4860:4860::8888", "8.8.8.8", "10.0.0.1", "fe80::1"]
    assert ipv6.asked == ["2001:4860:4860::8888", "10.0.0.1", "fe80::1"]


def test_no_setting_looks_nothing_up_and_a_wrong_one_is_refused(tmp_path: Any) -> None:
    assert not GeoLocator.from_setting("").enabled
    assert not GeoLocator.from_setting(" , ").enabled
    with pytest.raises(GeoSettingInvalid, match="no such file"):
        GeoLocator.from_setting(str(tmp_path / "absent.mmdb"))
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(GeoSettingInvalid, match="not a MaxMind DB"):
        GeoLocator.from_setting(str(junk))
