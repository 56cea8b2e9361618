"""CSV import: consent evidence on every row; each bad row rejected with its line and reason; good rows in."""

from __future__ import annotations

import pytest

from herald_shared.contract.delivery import MessageBounced
from herald_shared.contract.subscriptions import ImportCompleted, SubscriberAdded
from herald_subscriptions.importer import BATCH
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform, Tenant

T = "2026-10-01T10:00:00+00:00"


async def _import(tenant: Tenant, body: bytes, list_id: str = "news") -> tuple[int, dict[str, object]]:
    response = await tenant.http.post(f"/v1/lists/{list_id}/imports", content=body,
                                      headers={"Content-Type": "text/csv"})
    return response.status_code, response.json()


async def test_a_file_with_every_kind_of_bad_row(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(custom_fields=[{"name": "city", "kind": "text"}, {"name": "age", "kind": "number"}])
    existing = (await acme.subscribe("existing@example.com")).json()["subscriber_id"]
    gone = (await acme.subscribe("unsub@example.com")).json()["subscriber_id"]
    await acme.http.post(f"/v1/subscribers/{gone}/unsubscribe")
    await platform.publisher.publish(MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m1", "subscriber_id": existing, "bounce_class": "hard", "diagnostic": "unknown user",
        "source": "dsn"}))
    await eventually(lambda: acme.http.get(f"/v1/subscribers/{existing}"),
                     lambda r: r.json()["status"] == "suppressed", what="existing suppressed")
    keeper = (await acme.subscribe("keeper@example.com")).json()["subscriber_id"]
    assert keeper

    rows = [
        "email;first_name;consent_method;consent_at;city;age",        # 1 header (semicolons, BOM)
        f"Good1@Example.com;Anna;webinar signup;{T};Riga;30",         # 2 ok
        f"bad-address;Bob;webinar signup;{T};Riga;31",                # 3 invalid_email
        "noconsent@example.com;Cara;;;Riga;32",                       # 4 missing_consent
        f"good1@example.com;Anna again;webinar signup;{T};Riga;30",   # 5 duplicate in the file
        f"existing@example.com;Dan;webinar signup;{T};;",             # 6 suppressed
        f"unsub@example.com;Eve;webinar signup;{T};;",                # 7 previously_unsubscribed
        f"keeper@example.com;Finn;webinar signup;{T};;",              # 8 already_subscribed
        f"age@example.com;Gus;webinar signup;{T};Riga;old",           # 9 invalid_custom_field
        f"extra@example.com;Hal;webinar signup;{T};Riga;40;surplus",  # 10 invalid_custom_field
        "when@example.com;Ida;webinar signup;01/11/2026;Riga;41",     # 11 invalid_consent (not an ISO time)
        "",                                                           # 12 blank line, skipped
        " ; ;;;;",                                                    # 13 empty_row: cells, all empty
        f'"quoted@example.com";"Jo; ""JJ"" Jones";webinar signup;{T};"Tartu\nold town";42',  # 14-15 ok
        f"good2@example.com;Kim;checkout;{T};Riga;",                  # 16 ok
    ]
    status, report = await _import(acme, "\ufeff".encode() + "\n".join(rows).encode())
    assert status == 202, report
    assert (report["rows_total"], report["rows_imported"], report["rows_rejected"]) == (13, 3, 10)
    assert report["rejected_by_reason"] == {"invalid_email": 1, "missing_consent": 1, "invalid_consent": 1,
                                            "duplicate": 1, "suppressed": 1, "previously_unsubscribed": 1,
                                            "already_subscribed": 1, "invalid_custom_field": 2, "empty_row": 1}
    lines = {r["line"]: r["reason"] for r in report["rejections"]}  # type: ignore[attr-defined]
    assert list(lines) == sorted(lines)  # in line order, though rows are refused when read or when decided
    assert lines == {3: "invalid_email", 4: "missing_consent", 5: "duplicate", 6: "suppressed",
                     7: "previously_unsubscribed", 8: "already_subscribed", 9: "invalid_custom_field",
                     10: "invalid_custom_field", 11: "invalid_consent", 13: "empty_row"}

    events = await platform.events()
    added = [e for e in events if isinstance(e, SubscriberAdded) and e.payload.consent.source == "import"]
    assert sorted(str(e.payload.email) for e in added) == ["good1@example.com", "good2@example.com",
                                                           "quoted@example.com"]
    quoted = next(e for e in added if str(e.payload.email) == "quoted@example.com")
    assert quoted.payload.first_name == 'Jo; "JJ" Jones'
    assert quoted.payload.custom_fields == {"city": "Tartu\nold town", "age": 42}  # a custom text may run over lines
    assert quoted.payload.consent.method == "webinar signup"
    completed = next(e for e in events if isinstance(e, ImportCompleted))
    assert (completed.payload.rows_imported, completed.payload.rows_rejected) == (3, 10)
    counts = await eventually(lambda: _counts(acme), lambda c: c["active"] == 4, what="imported rows visible")
    assert counts["unsubscribed"] == 1 and counts["suppressed"] == 1  # keeper + three imported are active


async def _counts(tenant: Tenant) -> dict[str, int]:
    return (await tenant.http.get("/v1/lists/news")).json()["counts"]  # type: ignore[no-any-return]


async def test_comma_separated_utf8_without_bom(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    body = f"email,consent_method,consent_at,consent_ip\nzoe@example.com,shop checkbox,{T},198.51.100.4\n"
    status, report = await _import(acme, body.encode())
    assert (status, report["rows_imported"]) == (202, 1)
    added = next(e for e in await platform.events() if isinstance(e, SubscriberAdded))
    assert added.payload.consent.ip == "198.51.100.4"


async def test_files_that_cannot_be_imported_at_all_are_refused_whole(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    cases = [
        (b"email,first_name\nx@example.com,X\n", "missing column(s): consent_method, consent_at"),
        (f"email,consent_method,consent_at,shoe\nx@example.com,m,{T},42\n".encode(), "unknown column(s): shoe"),
        ("email,consent_method,consent_at,stra\xdfe\nj@example.com,m,t,x\n".encode("latin-1"), "not UTF-8"),
    ]
    for body, message in cases:
        status, problem = await _import(acme, body)
        assert status == 422 and problem["type"].endswith("/import_refused")  # type: ignore[union-attr]
        assert message in problem["detail"]  # type: ignore[operator]
    status, problem = await _import(acme, b"email,consent_method,consent_at\n", list_id="missing")
    assert status == 404
    as_json = await acme.http.post("/v1/lists/news/imports", json={"email": "x@example.com"})
    assert as_json.status_code == 415 and as_json.headers["content-type"] == "application/problem+json"
    assert not [e for e in await platform.events() if isinstance(e, SubscriberAdded)]


async def test_a_value_too_long_rejects_its_row_not_the_import(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    body = (f"email,first_name,phone,consent_method,consent_at\n"
            f"long@example.com,{'N' * 300},,form,{T}\n"
            f"phone@example.com,Pia,{'1' * 60},form,{T}\n"
            f"fine@example.com,Fay,,form,{T}\n"
            f"long@example.com,Lia,,form,{T}\n")  # the address again, valid this time: not a duplicate
    status, report = await _import(acme, body.encode())
    assert status == 202, report
    assert (report["rows_imported"], report["rejected_by_reason"]) == (2, {"invalid_value": 2})
    assert [r["line"] for r in report["rejections"]] == [2, 3]  # type: ignore[index]
    completed = next(e for e in await platform.events() if isinstance(e, ImportCompleted))
    assert completed.payload.rows_imported == 2
    added = [e for e in await platform.events() if isinstance(e, SubscriberAdded)]
    assert {(str(e.payload.email), e.payload.first_name) for e in added} == {("fine@example.com", "Fay"),
                                                                            ("long@example.com", "Lia")}


async def test_hosted_form_refuses_over_long_input_with_a_page(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    response = await platform.submit("/subscribe/acme/news", {
        "email": "x@example.com", "first_name": "N" * 300, "consent": "yes"}, headers={"User-Agent": "U" * 5000})
    assert response.status_code == 422 and "too long" in response.text


async def test_bodies_over_their_routes_limit_are_refused_413_and_change_nothing(platform: Platform) -> None:
    """The running service: a JSON body over 1 MiB, and an import declared over its 256 MiB, are refused before
    anything is read or recorded (the limits: herald_shared.http.BodyLimit, subscriptions' LARGER_BODIES)."""
    acme = await platform.tenant("acme")
    await acme.create_list()
    padded = await acme.http.post("/v1/lists", json={"list_id": "big", "name": "x" * (1 << 20)})
    assert padded.status_code == 413 and padded.headers["content-type"] == "application/problem+json"
    assert padded.json()["detail"] == "this route takes at most 1,048,576 bytes of request body"
    assert (await acme.http.get("/v1/lists/big")).status_code == 404
    huge = await acme.http.post("/v1/lists/news/imports", content=b"email,consent_method,consent_at\n",
                                headers={"Content-Type": "text/csv", "Content-Length": str((256 << 20) + 1)})
    assert huge.status_code == 413
    assert not [e for e in await platform.events() if isinstance(e, SubscriberAdded | ImportCompleted)]


async def test_rows_the_file_does_not_give_cleanly_are_rejected_and_accounted_for(platform: Platform) -> None:
    """A quote left open takes in the rows after it; a field over the csv module's limit; consent evidence
    that is no evidence: each is a rejected row with its line, and every good row before and after is in."""
    acme = await platform.tenant("acme")
    await acme.create_list()
    n = BATCH + 500  # one full batch and more
    good = [f"good{i}@example.com,shop checkbox,{T}," for i in range(n)]
    rows = [
        "email,consent_method,consent_at,consent_ip,",                  # 1 header, an unnamed last column
        *good,                                                          # 2 .. n+1 ok
        f'open@example.com,form,{T},"198.51.100.4,',                    # n+2 .. n+4 one row: the quote
        f"taken1@example.com,form,{T},,",                               # is left open until the one
        f'taken2@example.com,form,{T},",',                              # ending line n+4
        f"big@example.com,form,{T},{'9' * 140_000},",                   # n+5 invalid_csv
        "future@example.com,form,2099-01-01T00:00:00Z,,",              # n+6 invalid_consent
        f"ip@example.com,form,{T},<script>alert(1)</script>,",          # n+7 invalid_consent
        f"method@example.com,{'m' * 1500},{T},,",                       # n+8 invalid_value
        f"unnamed@example.com,form,{T},,surplus",                       # n+9 invalid_custom_field
        f"after@example.com,form,{T},2001:db8::1,",                     # n+10 ok
        f"jörg@example.com,form,{T},,",                                 # n+11 invalid_email: not sendable
    ]
    status, report = await _import(acme, "\n".join(rows).encode())
    assert status == 202, report
    assert (report["rows_total"], report["rows_imported"], report["rows_rejected"]) == (n + 8, n + 1, 7)
    rejections = {r["line"]: (r["reason"], r["detail"]) for r in report["rejections"]}  # type: ignore[attr-defined]
    assert {line - n: reason for line, (reason, _) in rejections.items()} == {
        2: "multiline_row", 5: "invalid_csv", 6: "invalid_consent", 7: "invalid_consent",
        8: "invalid_value", 9: "invalid_custom_field", 11: "invalid_email"}
    assert (f"lines {n + 2}-{n + 4} were read as one row: its consent_ip runs over several lines"
            in rejections[n + 2][1])
    added = {str(e.payload.email): e for e in await platform.events() if isinstance(e, SubscriberAdded)}
    assert len(added) == n + 1 and "good0@example.com" in added and f"good{n - 1}@example.com" in added
    assert added["after@example.com"].payload.consent.ip == "2001:db8::1"
    assert not {"open@example.com", "taken1@example.com", "taken2@example.com", "big@example.com"} & set(added)
    completed = next(e for e in await platform.events() if isinstance(e, ImportCompleted))
    assert (completed.payload.rows_imported, completed.payload.rows_rejected) == (n + 1, 7)


async def test_rows_whose_values_are_not_what_they_seem_are_rejected_not_imported(platform: Platform) -> None:
    """A stray quote in a custom text swallowing the rows after it, a field over the csv module's limit hiding
    a row in its quoted value, a byte that is not UTF-8 past the first 8 KiB, numbers with a thousands
    separator, a custom text over the API's 1,000 characters, a consent time that is a placeholder: each is a
    rejected row with its line, and every row around them is in."""
    acme = await platform.tenant("acme")
    await acme.create_list(custom_fields=[{"name": "notes", "kind": "text"}, {"name": "score", "kind": "number"}])
    padding = [f"pad{i}@example.com,form,{T},n,{i}" for i in range(300)]  # ~11 KiB
    rows = [
        "email,consent_method,consent_at,notes,score",                     # 1
        *padding,                                                          # 2 .. 301 ok
        f'anna@example.com,form,{T},"VIP,1',                               # 302 .. 304 one row: the quote
        f"bob@example.com,form,{T},,2",                                    # left open takes in bob and
        f'carol@example.com,form,{T},",3',                                 # carol
        f'huge@example.com,form,{T},"{"x" * 140_000}',                     # 305 .. 306 invalid_csv, the whole
        f'evil@example.com,form,{T},",4',                                  # quoted value with it
        f"jörg@example.com,form,{T},,5",                                   # 307 not_utf8 (Latin-1)
        f"thousands@example.com,form,{T},,\"1,000\"",                      # 308 invalid_custom_field
        f"underscore@example.com,form,{T},,1_000",                         # 309 invalid_custom_field
        f"long@example.com,form,{T},{'n' * 1001},",                        # 310 invalid_custom_field
        "placeholder@example.com,form,0001-01-01T00:00:00Z,,",            # 311 invalid_consent
        f"after@example.com,form,{T},fine,\"2,5\"",                        # 312 ok
        "nowhen@example.com,form,0001-01-01T00:00:00+01:00,,",            # 313 invalid_consent: no time in UTC
    ]
    body = "\n".join(rows).encode().replace("jörg".encode(), "jörg".encode("latin-1"))
    status, report = await _import(acme, body)
    assert status == 202, report
    assert (report["rows_total"], report["rows_imported"], report["rows_rejected"]) == (309, 301, 8)
    rejections = {r["line"]: (r["reason"], r["detail"]) for r in report["rejections"]}  # type: ignore[attr-defined]
    assert {line: reason for line, (reason, _) in rejections.items()} == {
        302: "multiline_row", 305: "invalid_csv", 307: "not_utf8", 308: "invalid_custom_field",
        309: "invalid_custom_field", 310: "invalid_custom_field", 311: "invalid_consent", 313: "invalid_consent"}
    assert "lines 302-304 were read as one row: its notes runs over several lines, and line 303" in rejections[302][1]
    assert "lines 305-306 were read as one row" in rejections[305][1]
    assert rejections[307][1].startswith("line 307: byte 0xf6 is not UTF-8")
    assert "ambiguous" in rejections[308][1] and "not a number" in rejections[309][1]
    assert "at most 1,000" in rejections[310][1] and "before 2000-01-01" in rejections[311][1]
    assert "no time in UTC" in rejections[313][1]
    added = {str(e.payload.email): e for e in await platform.events() if isinstance(e, SubscriberAdded)}
    assert len(added) == 301 and "pad0@example.com" in added and "pad299@example.com" in added
    assert added["after@example.com"].payload.custom_fields == {"notes": "fine", "score": 2.5}


async def test_consent_the_api_is_given_must_have_happened_and_name_an_address(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    for consent in ({"method": "checkout", "collected_at": "2999-01-01T00:00:00Z"},
                    {"method": "checkout", "collected_at": "9999-12-31T23:59:59-23:59"},
                    {"method": "checkout", "collected_at": "0001-01-01T00:00:00+01:00"},
                    {"method": "checkout", "collected_at": "1999-12-31T23:59:59Z"}):
        answer = await acme.http.post("/v1/lists/news/subscribers", json={"email": "p@example.com",
                                                                           "consent": consent})
        assert answer.status_code == 422 and answer.json()["type"].endswith("/invalid_consent"), answer.text
    not_ip = await acme.http.post("/v1/lists/news/subscribers", json={
        "email": "p@example.com", "consent": {"method": "checkout", "ip": "<script>alert(1)</script>"}})
    assert not_ip.status_code == 422 and "IPv4 or IPv6" in not_ip.text  # the schema says so: format ipv4/ipv6
    fine = await acme.http.post("/v1/lists/news/subscribers", json={
        "email": "p@example.com", "consent": {"method": "checkout", "ip": "198.51.100.4"}})
    assert fine.status_code == 201, fine.text


async def test_rows_after_the_list_is_deleted_mid_import_are_rejected_not_counted_imported(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The list is read again before each batch: deleted while the file is read, the rows after are rejected
    (`list_deleted`) rather than published, dead-lettered by the projection and reported as imported."""
    acme = await platform.tenant("acme")
    await acme.create_list()
    store = platform.service.service.store
    read = store.list_state
    reads = 0

    async def deleted_before_the_second_batch(account_id: str, list_id: str) -> object:
        nonlocal reads
        reads += 1
        if reads == 3:  # the import's own read, the first batch's, then the second batch's
            assert (await acme.http.delete("/v1/lists/news")).status_code == 204
            await eventually(lambda: read(account_id, list_id), lambda lst: lst is not None and lst.deleted,
                             what="the deletion folded")
        return await read(account_id, list_id)

    monkeypatch.setattr(store, "list_state", deleted_before_the_second_batch)
    rows = "".join(f"p{i}@example.com,shop checkbox,{T}\n" for i in range(BATCH + 5))
    status, report = await _import(acme, f"email,consent_method,consent_at\n{rows}".encode())
    assert status == 202, report
    assert (report["rows_total"], report["rows_imported"], report["rows_rejected"]) == (BATCH + 5, BATCH, 5)
    assert report["rejected_by_reason"] == {"list_deleted": 5}
    added = [e for e in await platform.events() if isinstance(e, SubscriberAdded)]
    assert len(added) == BATCH
