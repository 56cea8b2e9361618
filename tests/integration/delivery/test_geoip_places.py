"""The country and city of opens (PRODUCT.md: country/city collected), looked up in the GeoIP database the test
command fetches (DB-IP's City Lite, `scripts/lib.sh` ensure_geoip), on the real stack."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from herald_delivery.main import Delivery
from herald_shared.contract.delivery import MessageOpened
from herald_shared.settings import HeraldSettings

from .conftest import World, delivery_settings

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")


def databases() -> str:
    found = os.environ.get("HERALD_GEOIP_DATABASES", "")
    assert found, "HERALD_GEOIP_DATABASES is not set: run the tests with scripts/test (it fetches the database)"
    return found


async def test_opens_carry_the_country_and_city_of_the_readers_address(
        start_delivery: Any, world: World) -> None:
    running = await start_delivery(HERALD_GEOIP_DATABASES=databases())
    sign = running.service.tokens.tracking_token
    readers = {"m-riga": "85.254.0.1", "m-v6": "2001:67c:2e8::2", "m-mapped": "::ffff:8.8.8.8",
               "m-test-net": "198.51.100.9", "m-private": "10.1.2.3"}
    for message_id, ip in readers.items():
        pixel = f"/t/o/{sign({'a': 'acme', 'm': message_id, 'c': 'c1', 's': 's1'})}"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=running.service.app, client=(ip, 5000)),
                                     base_url="http://track.test") as reader:
            answer = await reader.get(pixel, headers={"User-Agent": IPHONE})
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/gif"

    def opens(events: list[Any]) -> dict[str, Any]:
        return {e.payload.message_id: e.payload.client for e in events if isinstance(e, MessageOpened)}

    clients = opens(await world.wait_for(lambda es: len(opens(es)) == len(readers), "every open recorded"))
    riga = clients["m-riga"]
    assert (riga.ip, riga.country, riga.device) == ("85.254.0.1", "LV", "mobile")
    assert riga.city is not None and riga.city.startswith("Riga")
    assert (clients["m-v6"].country, clients["m-v6"].city, clients["m-mapped"].country) == ("NL", "Amsterdam", "US")
    assert clients["m-mapped"].ip == "::ffff:8.8.8.8"  # the address as the client came, placed as its IPv4
    for nowhere in ("m-test-net", "m-private"):
        assert (clients[nowhere].country, clients[nowhere].city) == (None, None), nowhere


@pytest.mark.parametrize("setting", ["{missing}", "{not_mmdb}", "{real},{missing}"])
async def test_a_geoip_setting_naming_no_database_stops_the_start(
        settings: HeraldSettings, tmp_path: Any, setting: str) -> None:
    not_mmdb = tmp_path / "city.mmdb"
    not_mmdb.write_bytes(b"not a MaxMind DB" * 100)
    value = setting.format(missing=tmp_path / "absent.mmdb", not_mmdb=not_mmdb,
                           real=databases().split(",")[0])
    with pytest.raises(SystemExit, match="HERALD_GEOIP_DATABASES"):
        Delivery(delivery_settings(settings, 2525, HERALD_GEOIP_DATABASES=value))
