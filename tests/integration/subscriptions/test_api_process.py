"""HERALD_RUN_CONSUMERS=false: a subscriptions process that serves HTTP only, beside one that folds the read
model (README, "Processes"). What the API process records is folded by the other, and its answers that read
their own writes wait for the checkpoints the other stores."""

from __future__ import annotations

import httpx

from herald_subscriptions.main import Subscriptions
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform

T = "2026-10-01T10:00:00+00:00"


async def test_an_api_process_records_and_the_folding_process_makes_it_visible(platform: Platform) -> None:
    acme = await platform.tenant("acme")  # its key projected by the folding process (the platform fixture)
    api = Subscriptions(platform.settings.model_copy(update={"run_consumers": False}))
    await api.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://subs-api",
                                     headers={"Authorization": f"Bearer {acme.key}"}) as http:
            assert (await http.get("/readyz")).status_code == 200
            created = await http.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "single"})
            assert created.status_code == 201, created.text
            # Read-your-writes: answered from the read model the other process folded.
            subscribed = await http.post("/v1/lists/news/subscribers", json={
                "email": "ann@example.com", "consent": {"method": "signup form on acme.example"}})
            assert subscribed.status_code == 201, subscribed.text
            assert subscribed.json()["status"] == "active"
            rows = ["email,consent_method,consent_at", f"bo@example.com,webinar,{T}", f"cy@example.com,webinar,{T}",
                    f"ann@example.com,webinar,{T}"]
            imported = await http.post("/v1/lists/news/imports", content="\n".join(rows).encode(),
                                       headers={"Content-Type": "text/csv"})
            assert imported.status_code == 202, imported.text
            assert (imported.json()["rows_imported"], imported.json()["rejected_by_reason"]) == (
                2, {"already_subscribed": 1})
            await eventually(lambda: http.get("/v1/lists/news"), lambda r: r.json()["counts"]["active"] == 3,
                             what="the import folded by the other process")
        # The folding process saw the same, and this one never consumed anything itself.
        listed = await acme.http.get("/v1/lists/news/subscribers", params={"status": "active"})
        assert sorted(m["email"] for m in listed.json()["items"]) == [
            "ann@example.com", "bo@example.com", "cy@example.com"]
        assert api.consumers == [] and not api.projector.started and not api.suppressor.started
        assert platform.service.projector.started
    finally:
        await api.stop()
