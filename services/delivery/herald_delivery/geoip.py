"""Where an open or a click came from: the country and city of the client's IP address (PRODUCT.md, "Personal
data ... collected: IP, country/city"), looked up in MaxMind DB files (`HERALD_GEOIP_DATABASES`).

Two record layouts are read: MaxMind's GeoIP2/GeoLite2 City and DB-IP's own files (`country.iso_code`,
`city.names.en`), and the flat one of the ip-location-db packages (`country_code`, `city`) that the local stack
downloads (DB-IP's City Lite, CC BY 4.0: "IP Geolocation by DB-IP", https://db-ip.com). Several files are asked
in turn (that package keeps IPv4 and IPv6 apart). The files are mapped into memory, not loaded; a lookup
costs ~25 us here (parsing the address ~6, decoding the record ~10), and the last 8,192 addresses' places are
kept. An address no file knows (private, reserved, documentation) or that is malformed has no place, and
neither has any client when no file is configured.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import maxminddb
from maxminddb.errors import InvalidDatabaseError

COUNTRY_LENGTH = 2
CITY_LENGTH = 100  # the contract's ClientContext.city
CACHED_ADDRESSES = 8192


class GeoSettingInvalid(ValueError):
    """A GeoIP file that is missing or not a MaxMind DB: refused at start, not found out one open at a time."""


class Reader(Protocol):
    def get(self, ip_address: str) -> Any: ...


@dataclass(frozen=True)
class Place:
    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    city: str | None = None


NOWHERE = Place()


def place_of(record: object) -> Place:
    """A record of either layout as a Place; anything else (or values the contract could not carry) is nowhere."""
    if not isinstance(record, Mapping):
        return NOWHERE
    country: object = record.get("country_code")
    city: object = record.get("city")
    nested_country = record.get("country")
    if isinstance(nested_country, Mapping):
        country = nested_country.get("iso_code")
    if isinstance(city, Mapping):
        names = city.get("names")
        city = names.get("en") if isinstance(names, Mapping) else None
    code = country.upper() if isinstance(country, str) else ""
    name = city.strip() if isinstance(city, str) else ""
    known = len(code) == COUNTRY_LENGTH and code.isascii() and code.isalpha() and code not in ("ZZ", "XX")
    return Place(code if known else None, name[:CITY_LENGTH] or None)


class GeoLocator:
    def __init__(self, readers: Sequence[Reader] = ()) -> None:
        self._readers = list(readers)
        # Opens come in bursts from the same addresses (a mail provider's image proxy, an office): ~1.5 MB.
        self._cached = functools.lru_cache(maxsize=CACHED_ADDRESSES)(self._locate)

    @classmethod
    def from_setting(cls, setting: str) -> GeoLocator:
        """`HERALD_GEOIP_DATABASES`: paths of MaxMind DB files, comma-separated; empty: no lookups."""
        readers = []
        for raw in setting.split(","):
            path = Path(raw.strip())
            if not raw.strip():
                continue
            if not path.is_file():
                raise GeoSettingInvalid(f"HERALD_GEOIP_DATABASES: {path}: no such file")
            try:
                readers.append(maxminddb.open_database(str(path)))
            except (InvalidDatabaseError, OSError, ValueError) as exc:
                raise GeoSettingInvalid(f"HERALD_GEOIP_DATABASES: {path} is not a MaxMind DB file ({exc})") from None
        return cls(readers)

    @property
    def enabled(self) -> bool:
        return bool(self._readers)

    def locate(self, ip: str | None) -> Place:
        if not ip or not self._readers:
            return NOWHERE
        return self._cached(ip)

    def _locate(self, ip: str) -> Place:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return NOWHERE
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        # Private, reserved and documentation ranges are in no GeoIP file: asking costs less than `is_global`.
        for reader in self._readers:
            try:
                found = reader.get(str(address))
            except ValueError:  # an IPv6 address asked of an IPv4-only file
                continue
            if found is not None:
                return place_of(found)
        return NOWHERE

    def close(self) -> None:
        for reader in self._readers:
            close = getattr(reader, "close", None)
            if close is not None:
                close()
        self._readers = []
