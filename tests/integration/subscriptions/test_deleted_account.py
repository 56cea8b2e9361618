"""A deleted account takes no more subscribers and confirms none, on the real stack: its hosted form is gone, a
confirmation link mailed before the deletion is void, nothing is asked to be mailed in its name; its members can
still unsubscribe (PRODUCT.md: "Herald processes subscriber data only for the customer's purposes")."""

from __future__ import annotations

from urllib.parse import urlsplit

from herald_shared.apikeys import key_id_of
from herald_shared.contract.billing import AccountDeleted, AccountPurged, ApiKeyRevoked, SendingBlocked
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    SubscriberAdded,
    SubscriberConfirmed,
)
from herald_shared.purging import PURGED
from herald_shared.rebuilding import FORMATS
from herald_subscriptions.rebuild import fold_read_model
from herald_subscriptions.store import DELETED_ACCOUNTS_MARK, SubscriptionsStore, learn_deleted_accounts
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform, Tenant


async def _confirm_link(platform: Platform, subscriber_id: str) -> str:
    requested = [e for e in await platform.events() if isinstance(e, ConfirmationRequested)
                 and e.payload.subscriber_id == subscriber_id]
    return urlsplit(str(requested[-1].payload.confirm_url)).path


async def _delete_account_as_billing_does(platform: Platform, tenant: Tenant) -> AccountDeleted:
    deleted = AccountDeleted(account_id=tenant.account_id, producer="billing",
                             payload={"deleted_by": "owner"})
    key_id = key_id_of(tenant.key)
    assert key_id is not None
    await platform.publisher.publish_many([
        deleted,
        ApiKeyRevoked(account_id=tenant.account_id, producer="billing", payload={
            "key_id": key_id, "revoked_by": "owner", "reason": "the account was deleted"}),
        SendingBlocked(account_id=tenant.account_id, producer="billing", payload={
            "reason": "account_deleted", "detail": "the account was deleted"})])
    store = platform.service.service.store
    await eventually(lambda: store.list_state(tenant.account_id, "news"),
                     lambda lst: lst is not None and lst.account_deleted, what="the account's deletion folded")
    return deleted


async def test_a_deleted_accounts_form_and_links_take_no_one_but_its_members_still_unsubscribe(
        platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="double")
    anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
    assert (await platform.submit(await _confirm_link(platform, anna))).status_code == 200  # active
    pete = (await acme.subscribe("pete@example.com")).json()["subscriber_id"]
    petes_link = await _confirm_link(platform, pete)  # mailed before the deletion, never pressed
    assert (await platform.pages.get("/subscribe/acme/news")).status_code == 200

    deleted = await _delete_account_as_billing_does(platform, acme)

    form = await platform.pages.get("/subscribe/acme/news")
    assert form.status_code == 404 and "does not exist any more" in form.text
    posted = await platform.submit("/subscribe/acme/news", {"email": "after@example.com", "consent": "yes"})
    assert posted.status_code == 404 and "does not exist any more" in posted.text
    opened = await platform.pages.get(petes_link)  # opening changes nothing, as for any link
    assert opened.status_code == 200
    pressed = await platform.submit(petes_link)
    assert pressed.status_code == 410 and "no longer valid" in pressed.text

    one_click = urlsplit(platform.service.service.links.unsubscribe_url("acme", anna, "c1", "m-c1-anna")).path
    unsubscribed = await platform.pages.post(one_click, data={"List-Unsubscribe": "One-Click"})
    assert unsubscribed.status_code == 200 and unsubscribed.text == "Unsubscribed."
    store = platform.service.service.store
    member = await eventually(lambda: store.member("acme", anna), lambda doc: doc is not None
                              and doc["status"] == "unsubscribed", what="anna's one-click unsubscribe folded")
    assert member is not None and member["unsubscribe_source"] == "one_click"
    # The unsubscribe page of the confirmation email pete never confirmed: his "do not subscribe me".
    page = urlsplit(platform.service.service.links.unsubscribe_url("acme", pete)).path
    declined = await platform.submit(page, {"confirm": "yes"})
    assert declined.status_code == 200 and "You will not be subscribed" in declined.text

    after = [e for e in await platform.events() if e.occurred_at >= deleted.occurred_at]
    assert [(e.type, getattr(e.payload, "subscriber_id", None)) for e in after] == [
        ("SubscriberUnsubscribed", anna), ("SubscriberUnsubscribed", pete)]
    assert not [e for e in after if isinstance(e, SubscriberAdded | ConfirmationRequested | SubscriberConfirmed)]


async def test_a_rebuild_knows_the_account_was_deleted(platform: Platform) -> None:
    """The read model folded again from offset 0 holds the deletion as the live consumer folded it."""
    acme = await platform.tenant("acme")
    await acme.create_list(opt_in="double")
    await _delete_account_as_billing_does(platform, acme)
    live = await platform.service.projection.db["accounts"].find_one({"_id": "acme"})
    assert live is not None and live["deleted_at"] is not None and live["company_name"] == "acme Ltd"

    name = platform.settings.database_name("rebuilt")
    rebuilt = platform.service.mongo[name]
    try:
        await fold_read_model(platform.settings, rebuilt)
        assert await rebuilt["accounts"].find_one({"_id": "acme"}) == live
        lst = await SubscriptionsStore(rebuilt).list_state("acme", "news")
        assert lst is not None and lst.account_deleted
    finally:
        await platform.service.mongo.drop_database(name)


async def test_accounts_deleted_before_the_deletion_was_folded_are_learnt_once_from_herald_billing(
        platform: Platform) -> None:
    """The upgrade: a read model of the version before holds the account without its deletion (its consumer passed
    AccountDeleted over); at the next start the deletion is learnt from herald.billing once, so the form takes no
    one without a rebuild. A purged account is left out."""
    acme, gone = await platform.tenant("acme"), await platform.tenant("gone")
    await acme.create_list(opt_in="double")
    await gone.create_list()
    deleted = await _delete_account_as_billing_does(platform, gone)
    await platform.publisher.publish(AccountPurged(account_id="gone", producer="billing", payload={
        "reason": "deleted", "since": deleted.occurred_at}))  # type: ignore[arg-type]
    db = platform.service.projection.db
    await eventually(lambda: db[PURGED].find_one({"_id": "gone"}), lambda doc: doc is not None,
                     what="the purge folded")
    await _delete_account_as_billing_does(platform, acme)
    await db["accounts"].update_one({"_id": "acme"}, {"$unset": {"deleted_at": ""}})  # as the version before left it
    await db[FORMATS].delete_one({"_id": DELETED_ACCOUNTS_MARK})
    assert (await platform.pages.get("/subscribe/acme/news")).status_code == 200

    assert await learn_deleted_accounts(platform.settings, db) == 1
    account = await db["accounts"].find_one({"_id": "acme"})
    assert account is not None and account["deleted_at"] is not None
    assert await db["accounts"].find_one({"_id": "gone"}) is None  # purged: not brought back
    form = await platform.pages.get("/subscribe/acme/news")
    assert form.status_code == 404 and "does not exist any more" in form.text
    assert await learn_deleted_accounts(platform.settings, db) is None  # once: the mark is there
