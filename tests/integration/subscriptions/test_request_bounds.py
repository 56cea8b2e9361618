"""Every path and query parameter is bounded and a request target is at most 8 KiB (issue 20, "Size and shape"):
each limit is answered with a clear problem document before anything is read or written."""

from __future__ import annotations

from herald_shared.http import MAX_TARGET_BYTES, PROBLEM
from tests.integration.subscriptions.conftest import Platform


async def test_an_over_long_url_is_refused_414(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news", custom_fields=[{"name": "city", "kind": "text"}])
    refused = await acme.http.get("/v1/lists/news/subscribers", params={"field.city": "x" * MAX_TARGET_BYTES})
    assert refused.status_code == 414 and refused.headers["content-type"] == PROBLEM, refused.text
    assert refused.json()["type"] == "https://herald.dev/problems/uri_too_long"
    long_path = await acme.http.get("/v1/lists/" + "n" * MAX_TARGET_BYTES)
    assert long_path.status_code == 414


async def test_an_over_long_id_or_an_out_of_range_page_is_refused_422_naming_the_parameter(
        platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news", custom_fields=[{"name": "city", "kind": "text"}])
    await acme.subscribe("ann@example.org")

    async def refused(path: str, **params: str | int) -> list[str]:
        answer = await acme.http.get(path, params=params)
        assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM, answer.text
        return [error["location"] for error in answer.json()["errors"]]

    assert await refused("/v1/lists/" + "n" * 129) == ["path.list_id"]
    assert await refused("/v1/subscribers/" + "s" * 129) == ["path.subscriber_id"]
    assert await refused("/v1/lists/news/subscribers", limit=1001) == ["query.limit"]
    assert await refused("/v1/lists/news/subscribers", limit=0) == ["query.limit"]
    assert await refused("/v1/lists/news/subscribers", cursor="active.s" + "0" * 200) == ["query.cursor"]
    assert await refused("/v1/lists/news/subscribers", **{"field.city": "x" * 1001}) == ["query.field.city"]
    assert await refused("/v1/gdpr/export", email="a" * 250 + "@example.org") == ["query.email"]
    # At the bounds, the same requests are answered.
    assert (await acme.http.get("/v1/lists/" + "n" * 128)).status_code == 404
    page = await acme.http.get("/v1/lists/news/subscribers", params={"limit": 1000, "field.city": "x" * 1000})
    assert page.status_code == 200 and page.json()["items"] == []


async def test_the_hosted_pages_bound_their_path_parameters(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news", custom_fields=[{"name": "city", "kind": "text"}])
    for path in ("/subscribe/acme/" + "n" * 129, "/subscribe/" + "a" * 129 + "/news", "/confirm/" + "t" * 1001,
                 "/unsubscribe/" + "t" * 1001, "/preferences/" + "t" * 1001):
        answer = await platform.pages.get(path)
        assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM, path
    assert (await platform.pages.get("/confirm/" + "t" * 1000)).status_code == 400  # in bounds: not a valid link
