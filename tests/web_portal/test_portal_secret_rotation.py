"""The portal secret can be rotated: ``portal.secret`` as a list, the first signs, all verify.

Each step is a new portal process on the same database (SQLite and PostgreSQL), as a restart
with the edited config is: a visitor's session and the CSRF token in their open page were
signed before the rotation, and their chat is found again by the session's hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from yarl import URL

from tests.web_portal.conftest import SECRET, PortalFactory, Visitor, error_of

OLD = SECRET
NEW = "portal-test-rotated-secret-not-for-production"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def signed_with(secret: str, token: str) -> bool:
    """Whether a session token carries ``secret``'s signature."""
    nonce, _, signature = token.partition(".")
    mac = hmac.new(secret.encode(), b"session:" + nonce.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(signature, base64.urlsafe_b64encode(mac[:18]).decode())


def csrf_of(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), b"csrf:" + token.encode(), hashlib.sha256).hexdigest()


async def same_browser(visitor: Visitor, elsewhere: Visitor) -> Visitor:
    """``elsewhere`` (a visitor of another portal process) given ``visitor``'s cookie and
    the CSRF token of the page they have open."""
    token = visitor.cookie
    assert token is not None
    jar = elsewhere.client.session.cookie_jar
    jar.update_cookies({"sb_session": token}, URL(str(elsewhere.client.make_url("/"))))
    elsewhere.csrf = visitor.csrf
    return elsewhere


async def test_after_rotation_old_sessions_and_pages_still_work_and_new_ones_use_the_new_secret(
    make_portal: PortalFactory, store: str
) -> None:
    before = await make_portal(**{store: True}, secret=OLD)
    vera = await before.visitor()
    status, started = await vera.start()
    assert status == 201
    assert vera.cookie is not None and signed_with(OLD, vera.cookie)

    rotated = await make_portal(database=before.database, secret=(NEW, OLD))
    vera = await same_browser(vera, await rotated.visitor())
    # her page, loaded before the rotation, goes on: the chat is hers, her token is accepted
    mine = await vera.conversation()
    assert mine["conversation"]["id"] == started["conversation"]["id"]
    assert (await vera.say("still here"))[0] == 201
    # a page loaded now gets a CSRF token signed with the new secret, for the same session
    response = await vera.client.get("/api/session")
    assert (await response.json())["csrf_token"] == csrf_of(NEW, vera.cookie or "")
    # a new visitor's session is signed with the new secret
    ivo = await rotated.visitor()
    await ivo.session()
    assert ivo.cookie is not None and signed_with(NEW, ivo.cookie)
    assert not signed_with(OLD, ivo.cookie)
    assert ivo.csrf == csrf_of(NEW, ivo.cookie)


async def test_a_session_or_token_signed_by_a_removed_secret_is_refused(
    make_portal: PortalFactory, store: str
) -> None:
    before = await make_portal(**{store: True}, secret=OLD)
    vera = await before.visitor()
    assert (await vera.start())[0] == 201

    after = await make_portal(database=before.database, secret=NEW)
    stranger = await same_browser(vera, await after.visitor())
    # the old cookie is not adopted: no chat is shown, and nothing can be posted into it
    assert (await stranger.conversation())["conversation"] is None
    response = await stranger.post(
        "/api/conversation/messages", {"client_id": "c-1", "body": "after removal"}
    )
    await error_of(response, 403, "forbidden")

    # a session signed with the new secret, but a CSRF token signed with the removed one
    ivo = await after.visitor()
    await ivo.session()
    assert ivo.cookie is not None
    ivo.csrf = csrf_of(OLD, ivo.cookie)
    await error_of(await ivo.post("/api/conversation", {}), 403, "forbidden")
