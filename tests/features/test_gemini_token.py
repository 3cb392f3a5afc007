"""Client-to-server mode: the web server's Gemini ephemeral tokens, used by the real
google-genai client against the offline server, which enforces them as the service does:
one use, expiry, the model lock and the setup lock. The API key never reaches the caller."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
import pytest_asyncio
import websockets
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google import genai
from google.genai import errors, types

from agents.settings import load_settings
from agents.web import gemini_token
from devstack.gemini import OfflineGeminiServer

pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning")]

SECRET_KEY = "offline-key-that-must-stay-on-the-server"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gemini(tmp_path_factory):
    async with OfflineGeminiServer(cert_dir=tmp_path_factory.mktemp("gemini"), api_key=SECRET_KEY,
                                   accepted_keys={SECRET_KEY}) as srv:
        yield srv


@pytest.fixture
def env(gemini, monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("AGENT_") or key in ("GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
            monkeypatch.delenv(key)
    for key, value in gemini.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AGENT_DIRECT__ENABLED", "true")
    monkeypatch.setenv("AGENT_MODEL__VOICE", "Kore")
    monkeypatch.setenv("AGENT_MODEL__TEMPERATURE", "0.3")
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest_asyncio.fixture(loop_scope="module")
async def web_client(env):
    app = web.Application()
    app.router.add_post(gemini_token.PATH, gemini_token.handler(load_settings()))
    async with TestClient(TestServer(app)) as client:
        yield client


def browser(token: dict) -> genai.Client:
    """What the page does with the answer: the token as its key, nothing else."""
    return genai.Client(api_key=token["token"], http_options=types.HttpOptions(
        base_url=token["base_url"], api_version=token["api_version"]))


async def converse(client: genai.Client, model: str, config: dict | None = None) -> str:
    async with client.aio.live.connect(model=model, config=config or {}) as session:
        await session.send_realtime_input(text="hello there")
        words = []
        async for msg in session.receive():
            sc = msg.server_content
            if sc and sc.output_transcription and sc.output_transcription.text:
                words.append(sc.output_transcription.text)
            if sc and sc.turn_complete:
                return "".join(words)
    raise AssertionError("the session ended without a reply")


async def test_a_token_opens_one_session_locked_to_the_configured_setup(web_client, gemini):
    resp = await web_client.post(gemini_token.PATH)
    assert resp.status == 200
    raw = await resp.text()
    assert SECRET_KEY not in raw and SECRET_KEY not in json.dumps(dict(resp.headers))
    token = json.loads(raw)
    assert token["token"].startswith("auth_tokens/")
    assert token["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"
    assert token["websocket_url"].endswith("v1alpha.GenerativeService.BidiGenerateContentConstrained")

    before = len(gemini.sessions)
    reply = await converse(browser(token), token["model"])  # no setup of its own: the token's applies
    assert reply == "You said: hello there"
    session = gemini.sessions[before]
    assert session.constrained and SECRET_KEY not in json.dumps(session.headers)
    gc = session.setup["generation_config"]
    assert gc["speech_config"]["voice_config"]["prebuilt_voice_config"]["voice_name"] == "Kore"
    assert gc["temperature"] == pytest.approx(0.3)
    assert "voice assistant" in session.conversation.system_instruction  # config/instructions.md

    # one use only: the same token cannot open a second session
    with pytest.raises(websockets.InvalidStatus) as info:
        await converse(browser(token), token["model"])
    assert info.value.response.status_code == 401
    assert b"already been used" in info.value.response.body


async def test_a_token_locked_to_one_model_cannot_open_another(web_client, gemini):
    token = await (await web_client.post(gemini_token.PATH)).json()
    with pytest.raises(errors.APIError) as info:
        await converse(browser(token), "gemini-3.1-flash-live-preview")
    assert info.value.code == 1008
    assert "locked to models/gemini-2.5-flash-native-audio-preview-12-2025" in str(info.value)


async def test_a_locked_setup_field_cannot_be_changed(web_client):
    token = await (await web_client.post(gemini_token.PATH)).json()
    with pytest.raises(errors.APIError) as info:
        await converse(browser(token), token["model"], {"temperature": 1.5})
    assert info.value.code == 1007 and "generation_config.temperature is locked" in str(info.value)


async def test_an_expired_token_is_refused(env, gemini):
    settings = load_settings()
    minted_earlier = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=settings.direct.token_ttl_s + 5)
    old = await gemini_token.mint(settings, "be brief", now=minted_earlier)
    with pytest.raises(websockets.InvalidStatus) as info:
        await converse(browser(vars(old)), old.model)
    assert info.value.response.status_code == 401 and b"expired" in info.value.response.body


async def test_a_token_past_its_new_session_window_is_refused(env):
    settings = load_settings()
    late = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=settings.direct.new_session_s + 5)
    token = await gemini_token.mint(settings, "be brief", now=late)
    with pytest.raises(websockets.InvalidStatus) as info:
        await converse(browser(vars(token)), token.model)
    assert info.value.response.status_code == 401 and b"new sessions" in info.value.response.body


async def test_minting_needs_the_api_key_and_v1alpha(gemini, env):
    with pytest.raises(errors.APIError) as info:  # not the server's key
        await genai.Client(api_key="a-browser-guess", http_options=types.HttpOptions(api_version="v1alpha")
                           ).aio.auth_tokens.create(config=types.CreateAuthTokenConfig(uses=1))
    assert info.value.code == 403
    with pytest.raises(errors.APIError) as info:  # the service mints on v1alpha only
        await genai.Client(http_options=types.HttpOptions(api_version="v1beta")
                           ).aio.auth_tokens.create(config=types.CreateAuthTokenConfig(uses=1))
    assert info.value.code == 404


async def test_the_endpoint_is_off_unless_enabled_and_says_when_it_has_no_key(env):
    env.setenv("AGENT_DIRECT__ENABLED", "false")
    app = web.Application()
    app.router.add_post(gemini_token.PATH, gemini_token.handler(load_settings()))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(gemini_token.PATH)
        assert resp.status == 404 and (await resp.json())["error"] == "direct_mode_off"
    env.setenv("AGENT_DIRECT__ENABLED", "true")
    env.delenv("GOOGLE_API_KEY")
    app = web.Application()
    app.router.add_post(gemini_token.PATH, gemini_token.handler(load_settings()))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(gemini_token.PATH)
        assert resp.status == 503 and "GOOGLE_API_KEY" in (await resp.json())["message"]


async def test_gemini_tokens_are_rate_limited_per_client_address(env):
    """Each token opens a Gemini session on the server's key: the product's web app limits
    them per client address (web.gemini_token_rate_limit_per_minute), apart from /api/token."""
    from agents.web import LiveKitCredentials, create_app

    env.setenv("AGENT_WEB__GEMINI_TOKEN_RATE_LIMIT_PER_MINUTE", "2")
    env.setenv("AGENT_WEB__TRUST_FORWARDED_FOR", "true")
    app = create_app(load_settings(), LiveKitCredentials("ws://127.0.0.1:7880", "APIkey", "s" * 32))
    a, b = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.1"}
    async with TestClient(TestServer(app)) as client:
        statuses = [(await client.post(gemini_token.PATH, headers=a)).status for _ in range(2)]
        refused = await client.post(gemini_token.PATH, headers=a)
        assert statuses == [200, 200] and refused.status == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "too many Gemini token requests; at most 2 a minute, retry in" in (await refused.json())["error"]
        assert (await client.post(gemini_token.PATH, headers=b)).status == 200  # another address
        # the LiveKit token endpoint counts separately
        assert (await client.post("/api/token", json={}, headers=a)).status == 200
