"""On the real stack: an import with good rows and rows whose consent evidence is a placeholder (PRODUCT.md: "each
imported row carries its consent evidence (source, time, IP where known)"): the good rows are imported, each
placeholder row is reported with its line and reason, and a date-only consent time is imported marked as such.
The API refuses a placeholder method too."""

from __future__ import annotations

from herald_shared.contract.subscriptions import SubscriberAdded
from herald_subscriptions.importer import DATE_ONLY_MARK
from tests.integration.subscriptions.conftest import Platform

T = "2026-10-01T10:00:00+00:00"


async def test_placeholder_consent_rows_are_rejected_one_by_one_and_good_rows_imported(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    rows = [
        "email,consent_method,consent_at,consent_ip",   # 1
        f"ann@example.com,checkout checkbox,{T},",       # 2 ok
        f"dash@example.com,-,{T},",                      # 3 missing_consent
        f"na@example.com,n/a,{T},",                      # 4 missing_consent
        f"blank@example.com,   ,{T},",                   # 5 missing_consent
        f"none@example.com,None,{T},",                   # 6 missing_consent
        f"null@example.com,null,{T},",                   # 7 missing_consent
        f"unknown@example.com,UNKNOWN,{T},",             # 8 missing_consent
        f"what@example.com,?,{T},",                      # 9 missing_consent
        "day@example.com,paper form,2026-11-01,",        # 10 ok, date only
        f"bob@example.com,webinar signup,{T},198.51.100.4",  # 11 ok
    ]
    response = await acme.http.post("/v1/lists/news/imports", content="\n".join(rows).encode(),
                                    headers={"Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    report = response.json()
    assert (report["rows_total"], report["rows_imported"], report["rows_rejected"]) == (10, 3, 7)
    assert report["rejected_by_reason"] == {"missing_consent": 7}
    rejections = {r["line"]: r for r in report["rejections"]}
    assert sorted(rejections) == [3, 4, 5, 6, 7, 8, 9]
    assert "placeholder" in rejections[3]["detail"] and "'n/a'" in rejections[4]["detail"]
    assert "required" in rejections[5]["detail"]

    added = {str(e.payload.email): e.payload.consent for e in await platform.events()
             if isinstance(e, SubscriberAdded)}
    assert sorted(added) == ["ann@example.com", "bob@example.com", "day@example.com"]
    assert added["day@example.com"].method == f"paper form {DATE_ONLY_MARK}"
    assert added["day@example.com"].collected_at.isoformat() == "2026-11-01T00:00:00+00:00"
    assert added["ann@example.com"].method == "checkout checkbox"

    refused = await acme.http.post("/v1/lists/news/subscribers",
                                   json={"email": "api@example.com", "consent": {"method": "n/a"}})
    assert refused.status_code == 422 and "missing_consent" in refused.text
