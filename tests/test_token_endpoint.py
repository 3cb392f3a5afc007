"""POST /api/token, as a browser or a script sees it: grants, rooms and identities chosen by
the server, meeting invites, validation, rate limit, CORS.

Runs the product's aiohttp app on 127.0.0.1 (aiohttp's TestServer) and decodes the tokens
it returns with livekit-api's TokenVerifier, the check a LiveKit server makes.
"""

from __future__ import annotations

import json
import logging
import base64
import re
import secrets
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from livekit import api

from agents.settings import AgentIdentitySettings, Settings, WebSettings
from agents.web import STATIC_DIR, ConfigError, LiveKitCredentials, create_app
from agents.web.invites import Invites
from agents.web.token_service import RateLimiter

API_KEY = "APItest" + secrets.token_hex(4)
API_SECRET = "sec-" + secrets.token_urlsafe(32)
LIVEKIT_URL = "ws://127.0.0.1:7880"
ALLOWED_ORIGIN = "https://app.example.com"
JSON_HEADERS = {"Content-Type": "application/json"}


def make_settings(agent_name: str = "test-agent", **web: object) -> Settings:
    web_settings = {"token_ttl_s": 600, "allowed_origins": [ALLOWED_ORIGIN], "rate_limit_per_minute": 1000}
    web_settings.update(web)
    return Settings(agent=AgentIdentitySettings(name=agent_name), web=WebSettings(**web_settings))


CREDENTIALS = LiveKitCredentials(LIVEKIT_URL, API_KEY, API_SECRET)


async def start(settings: Settings) -> TestClient:
    client = TestClient(TestServer(create_app(settings, CREDENTIALS), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    c = await start(make_settings())
    yield c
    await c.close()


def verify(token: str) -> api.Claims:
    return api.TokenVerifier(API_KEY, API_SECRET).verify(token)


async def post_token(client: TestClient, body: object, headers: dict[str, str] | None = None):
    return await client.post("/api/token", data=json.dumps(body), headers={**JSON_HEADERS, **(headers or {})})


# --- grants ---------------------------------------------------------------------------


async def test_token_grants_one_fresh_room_with_least_privilege(client: TestClient) -> None:
    resp = await post_token(client, {"name": "Alice A."})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {
        "server_url", "participant_token", "room", "identity", "expires_at",
        "invite", "invite_expires_at", "agent_join_timeout_s",
    }
    assert body["server_url"] == LIVEKIT_URL
    assert re.fullmatch(r"call-[0-9a-f]{16}", body["room"])
    assert re.fullmatch(r"user-[0-9a-f]{16}", body["identity"])

    claims = verify(body["participant_token"])
    assert claims.identity == body["identity"]
    assert claims.name == "Alice A."
    video = claims.video
    assert video is not None
    assert video.room_join is True
    assert video.room == body["room"]
    assert video.can_publish is True
    assert sorted(video.can_publish_sources or []) == sorted(
        ["microphone", "camera", "screen_share", "screen_share_audio"]
    )
    assert video.can_subscribe is True
    assert video.can_publish_data is True
    # Nothing beyond joining that one room.
    for grant in ("room_admin", "room_create", "room_list", "room_record", "recorder", "agent",
                  "ingress_admin", "hidden", "can_update_own_metadata", "destination_room"):
        assert not getattr(video, grant), grant
    assert claims.sip is not None and not claims.sip.admin and not claims.sip.call
    assert claims.agent is None
    assert not claims.metadata and not claims.attributes


async def test_token_dispatches_the_agent_by_name(client: TestClient) -> None:
    body = await (await post_token(client, {})).json()
    claims = verify(body["participant_token"])
    assert claims.room_config is not None
    assert [d.agent_name for d in claims.room_config.agents] == ["test-agent"]


async def test_automatic_dispatch_puts_no_room_config_in_the_token() -> None:
    c = await start(make_settings(agent_name=""))
    try:
        body = await (await post_token(c, {})).json()
        claims = verify(body["participant_token"])
        assert claims.room_config is None or not claims.room_config.agents
    finally:
        await c.close()


async def test_token_lifetime_comes_from_settings() -> None:
    c = await start(make_settings(token_ttl_s=123))
    try:
        body = await (await post_token(c, {})).json()
        raw = jwt.decode(body["participant_token"], API_SECRET, algorithms=["HS256"], issuer=API_KEY)
        assert raw["exp"] - raw["nbf"] == 123
        assert body["expires_at"] == raw["exp"]
    finally:
        await c.close()


async def test_default_lifetime_is_ten_minutes() -> None:
    assert WebSettings().token_ttl_s == 600
    c = await start(Settings(web=WebSettings(allowed_origins=[])))
    try:
        body = await (await post_token(c, {})).json()
        raw = jwt.decode(body["participant_token"], API_SECRET, algorithms=["HS256"], issuer=API_KEY)
        assert raw["exp"] - raw["nbf"] == 600
    finally:
        await c.close()


async def test_every_request_gets_its_own_identity_and_a_new_conversation_its_own_room(
    client: TestClient,
) -> None:
    bodies = [await (await post_token(client, {"name": "Bob"})).json() for _ in range(20)]
    identities = {b["identity"] for b in bodies}
    rooms = {b["room"] for b in bodies}
    assert len(identities) == 20 and len(rooms) == 20
    for b in bodies:
        claims = verify(b["participant_token"])
        assert claims.identity == b["identity"] and claims.video.room == b["room"]
        assert claims.name == "Bob"  # the display name is the person's; the identity is not


@pytest.mark.parametrize("identity", ["alice", "agent-AJ_123", "user-0123456789abcdef"])
async def test_a_requested_identity_is_never_granted(client: TestClient, identity: str) -> None:
    resp = await post_token(client, {"identity": identity, "name": "Alice"})
    assert resp.status == 400
    err = await resp.json()
    assert err["field"] == "identity"
    assert "assigned by the server" in err["error"]
    assert "participant_token" not in err


async def test_a_chat_only_person_is_marked_for_the_agent(client: TestClient) -> None:
    """{"mode": "text"}: the token carries the attribute the agent reads (agents/chat_only.py)."""
    text = await (await post_token(client, {"mode": "text"})).json()
    assert verify(text["participant_token"]).attributes == {"lk.chat_only": "true"}
    voice = await (await post_token(client, {"mode": "voice"})).json()
    assert not verify(voice["participant_token"]).attributes
    bad = await post_token(client, {"mode": "video"})
    assert bad.status == 400 and (await bad.json()) == {
        "field": "mode", "error": "mode must be 'voice' or 'text' (chat only), not 'video'"}


async def test_a_requested_room_is_refused(client: TestClient) -> None:
    resp = await post_token(client, {"room": "support-1"})
    assert resp.status == 400
    err = await resp.json()
    assert err["field"] == "room"
    assert "invite" in err["error"]


# --- invites ---------------------------------------------------------------------------


async def test_an_invite_admits_to_its_own_meeting_with_a_new_identity(client: TestClient) -> None:
    alice = await (await post_token(client, {"name": "Alice"})).json()
    other = await (await post_token(client, {"name": "Carol"})).json()  # another conversation
    assert alice["invite_expires_at"] - int(time.time()) in range(14390, 14401)  # 4 h default

    resp = await post_token(client, {"name": "Bob", "invite": alice["invite"]})
    assert resp.status == 200
    bob = await resp.json()
    assert bob["room"] == alice["room"] != other["room"]
    assert bob["identity"] != alice["identity"]
    claims = verify(bob["participant_token"])
    assert claims.video.room == alice["room"] and claims.identity == bob["identity"]
    # Bob, now in the meeting, gets an invite of his own to the same room.
    carol2 = await (await post_token(client, {"invite": bob["invite"]})).json()
    assert carol2["room"] == alice["room"]
    # Each person's identity stays unique, however they joined.
    assert len({alice["identity"], bob["identity"], carol2["identity"], other["identity"]}) == 4


def _tamper_room(invite: str, room: str) -> str:
    header, payload, sig = invite.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["room"] = room
    new_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{new_payload}.{sig}"


async def _refused(client: TestClient, invite: object, status: int = 403) -> str:
    resp = await post_token(client, {"invite": invite})
    assert resp.status == status, await resp.text()
    err = await resp.json()
    assert err["field"] == "invite"
    assert "participant_token" not in err
    return err["error"]


async def test_an_altered_invite_is_refused(client: TestClient) -> None:
    alice = await (await post_token(client, {})).json()
    other = await (await post_token(client, {})).json()
    # the invite of one room, edited to name another room
    reason = await _refused(client, _tamper_room(alice["invite"], other["room"]))
    assert "signature" in reason
    # and a flipped signature character
    inv = alice["invite"]
    flipped = inv[:-2] + ("A" if inv[-2] != "A" else "B") + inv[-1]
    assert "not valid" in await _refused(client, flipped)


async def test_a_forged_invite_is_refused(client: TestClient) -> None:
    alice = await (await post_token(client, {})).json()
    # signed the same way with a key derived from another secret
    forged, _ = Invites("another-secret", ttl_s=3600).issue(alice["room"])
    assert "signature" in await _refused(client, forged)
    # a LiveKit access token for the room is not an invite
    assert "not valid" in await _refused(client, alice["participant_token"])
    # an unsigned JWT naming the room
    unsigned = jwt.encode({"room": alice["room"], "aud": "meeting-invite", "exp": 2**40}, None, algorithm="none")
    assert "not valid" in await _refused(client, unsigned)
    assert "not valid" in await _refused(client, "not-an-invite")


async def test_an_expired_invite_is_refused() -> None:
    c = await start(make_settings(invite_ttl_s=60))
    try:
        alice = await (await post_token(c, {})).json()
        assert alice["invite_expires_at"] - int(time.time()) in range(50, 61)
        # the same server's invite, issued 61 s ago
        old, exp = Invites(API_SECRET, ttl_s=60, clock=lambda: time.time() - 61).issue(alice["room"])
        assert exp < time.time()
        assert "expired" in await _refused(c, old)
        # still valid a moment before expiry
        fresh, _ = Invites(API_SECRET, ttl_s=60, clock=lambda: time.time() - 55).issue(alice["room"])
        assert (await post_token(c, {"invite": fresh})).status == 200
    finally:
        await c.close()


@pytest.mark.parametrize("invite", ["", "   ", 42, ["x"], None])
async def test_a_malformed_invite_field_is_refused(client: TestClient, invite: object) -> None:
    if invite is None:  # null means "no invite": a new conversation
        assert (await post_token(client, {"invite": None})).status == 200
        return
    assert "invite" in await _refused(client, invite, status=400)


async def test_an_oversized_invite_is_refused(client: TestClient) -> None:
    assert "at most" in await _refused(client, "x" * 2000)


async def test_public_url_setting_is_what_browsers_get() -> None:
    c = await start(make_settings(livekit_public_url="https://lk.example.com"))
    try:
        body = await (await post_token(c, {})).json()
        assert body["server_url"] == "wss://lk.example.com"
    finally:
        await c.close()


# --- validation -----------------------------------------------------------------------

BAD_BODIES = [
    ({"room": "r1"}, "room"),
    ({"identity": "alice"}, "identity"),
    ({"name": "n" * 65}, "name"),
    ({"name": "bell\x07"}, "name"),
    ({"name": "zero\u200bwidth"}, "name"),
    ({"name": 7}, "name"),
    ({"admin": True}, "admin"),
    (["r1"], "body"),
    ("r1", "body"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_bad_fields_are_refused_with_a_reason_naming_the_field(
    client: TestClient, body: object, field: str
) -> None:
    resp = await post_token(client, body)
    assert resp.status == 400
    err = await resp.json()
    assert err["field"] == field
    assert field in err["error"] or field == "body" and "JSON" in err["error"]


async def test_boundary_lengths_are_accepted(client: TestClient) -> None:
    resp = await post_token(client, {"name": "n" * 64})
    assert resp.status == 200
    resp = await post_token(client, {"name": "  Émile Zoë  "})
    assert resp.status == 200
    assert verify((await resp.json())["participant_token"]).name == "Émile Zoë"


async def test_malformed_json_is_refused(client: TestClient) -> None:
    resp = await client.post("/api/token", data=b'{"name": "x"', headers=JSON_HEADERS)
    assert resp.status == 400
    assert (await resp.json())["field"] == "body"


async def test_wrong_content_type_is_refused(client: TestClient) -> None:
    resp = await client.post("/api/token", data=b'{}', headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    err = await resp.json()
    assert err["field"] == "content-type"
    assert "application/json" in err["error"]


async def test_oversized_body_is_refused(client: TestClient) -> None:
    big = json.dumps({"name": "x" * 10_000}).encode()
    resp = await client.post("/api/token", data=big, headers=JSON_HEADERS)
    assert resp.status == 413
    assert (await resp.json())["field"] == "body"


async def test_oversized_chunked_body_is_refused(client: TestClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    resp = await client.post("/api/token", data=chunks(), headers=JSON_HEADERS)
    assert resp.status == 413
    assert (await resp.json())["field"] == "body"


async def test_only_post_is_served(client: TestClient) -> None:
    resp = await client.get("/api/token")
    assert resp.status == 405


# --- rate limit -----------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after() -> None:
    c = await start(make_settings(rate_limit_per_minute=3))
    try:
        statuses = [(await post_token(c, {})).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        resp = await post_token(c, {})
        assert resp.status == 429
        retry_after = int(resp.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        err = await resp.json()
        assert err["field"] == "client"
        assert "too many" in err["error"]
        # Bad requests count too, so the limit also caps probing.
        assert (await post_token(c, {"room": "r1"})).status == 429
    finally:
        await c.close()


async def test_rate_limit_is_per_client_address_behind_a_trusted_proxy() -> None:
    c = await start(make_settings(rate_limit_per_minute=2, trust_forwarded_for=True))
    try:
        a = {"X-Forwarded-For": "203.0.113.7"}
        b = {"X-Forwarded-For": "198.51.100.1, 203.0.113.8"}
        assert [(await post_token(c, {}, a)).status for _ in range(3)] == [200, 200, 429]
        assert (await post_token(c, {}, b)).status == 200
    finally:
        await c.close()


async def test_forwarded_for_is_ignored_unless_trusted() -> None:
    c = await start(make_settings(rate_limit_per_minute=2))
    try:
        statuses = [
            (await post_token(c, {}, {"X-Forwarded-For": f"203.0.113.{i}"})).status
            for i in range(3)
        ]
        assert statuses == [200, 200, 429]
    finally:
        await c.close()


def test_rate_limiter_window_and_memory_bound() -> None:
    now = [1000.0]
    limiter = RateLimiter(2, window_s=60.0, clock=lambda: now[0], max_clients=3)
    assert limiter.hit("a") is None and limiter.hit("a") is None
    assert limiter.hit("a") == 60.0
    now[0] += 59.0
    assert limiter.hit("a") == 1.0
    now[0] += 1.0  # the first request left the window
    assert limiter.hit("a") is None
    for key in ("b", "c", "d"):
        assert limiter.hit(key) is None
    assert len(limiter._hits) == 3


# --- CORS -----------------------------------------------------------------------------


async def test_preflight_from_an_allowed_origin_is_answered(client: TestClient) -> None:
    resp = await client.options(
        "/api/token",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()


async def test_post_from_an_allowed_origin_echoes_it(client: TestClient) -> None:
    resp = await post_token(client, {}, {"Origin": ALLOWED_ORIGIN})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Origin" in resp.headers["Vary"]
    # Errors are readable by the allowed page too, so it can show the reason.
    resp = await post_token(client, {"invite": "expired-or-forged"}, {"Origin": ALLOWED_ORIGIN})
    assert resp.status == 403 and (await resp.json())["field"] == "invite"
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


async def test_same_origin_is_allowed(client: TestClient) -> None:
    own = f"http://{client.host}:{client.port}"
    resp = await post_token(client, {}, {"Origin": own})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == own


@pytest.mark.parametrize(
    "origin", ["https://evil.example.net", "http://app.example.com", "https://app.example.com.evil.net", "null"]
)
async def test_other_origins_get_no_cors_and_no_token(client: TestClient, origin: str) -> None:
    pre = await client.options(
        "/api/token", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in pre.headers
    assert pre.status == 403
    resp = await post_token(client, {}, {"Origin": origin})
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    body = await resp.json()
    assert body["field"] == "origin"
    assert "participant_token" not in body


# --- the secret -----------------------------------------------------------------------


async def test_the_api_secret_never_appears_in_responses_or_logs(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def record(resp) -> None:  # type: ignore[no-untyped-def]
        seen.append(str(resp.status) + repr(dict(resp.headers)) + (await resp.read()).decode("utf-8", "replace"))

    await record(await post_token(client, {"name": "Alice"}))
    await record(await post_token(client, {}, {"Origin": ALLOWED_ORIGIN}))
    await record(await post_token(client, {"room": "r1"}))
    await record(await post_token(client, {"invite": "forged"}))
    await record(await client.post("/api/token", data=b"x", headers={"Content-Type": "text/plain"}))
    await record(await client.options("/api/token", headers={"Origin": ALLOWED_ORIGIN}))
    await record(await post_token(client, {}, {"Origin": "https://evil.example.net"}))
    await record(await client.get("/"))
    await record(await client.get("/healthz"))
    await record(await client.get("/no-such-page"))
    for name in ("app.js", "app.css"):
        await record(await client.get(f"/static/{name}"))

    everything = "\n".join(seen)
    assert "participant_token" in everything  # the responses were really collected
    assert API_SECRET not in everything
    assert API_SECRET not in caplog.text
    assert API_SECRET not in repr(CREDENTIALS)


def test_missing_credentials_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "ws://127.0.0.1:7880")
    monkeypatch.setenv("LIVEKIT_API_KEY", "k")
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    with pytest.raises(ConfigError, match="LIVEKIT_API_SECRET"):
        create_app(make_settings())


# --- the page -------------------------------------------------------------------------


async def test_the_client_page_and_its_bundle_are_served_from_this_server(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert "<html" in html.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/app.js" in assets and "/static/app.css" in assets
    # Everything the page loads comes from this server: no CDN at run time.
    assert all(a.startswith("/static/") for a in assets), assets
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "ws://127.0.0.1:7880" in csp
    js = await client.get("/static/app.js")
    assert js.status == 200
    assert "javascript" in js.headers["Content-Type"]
    assert (STATIC_DIR / "app.js").stat().st_size > 100_000  # livekit-client is bundled in
