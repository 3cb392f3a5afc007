"""Client-to-server mode: Gemini ephemeral tokens for a browser that talks to the Live API
itself (`direct:` settings). The API key never leaves this server: the browser gets a token
that opens `direct.token_uses` session(s) within `direct.new_session_s`, ends with
`direct.token_ttl_s`, and is locked to the configured model and setup (the service refuses
a session that asks for another model or another value of a locked field).

    app.router.add_post(gemini_token.PATH, gemini_token.handler(settings))
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import warnings
from dataclasses import asdict, dataclass

from aiohttp import web
from google import genai
from google.genai import errors, types

from .. import catalogue
from ..settings import Settings

logger = logging.getLogger("agents.web")

PATH = "/api/gemini-token"
API_VERSION = "v1alpha"  # the service serves ephemeral tokens on v1alpha only
PUBLIC_BASE_URL = "https://generativelanguage.googleapis.com"


@dataclass
class GeminiToken:
    token: str  # "auth_tokens/...": the browser's api key for the Live API
    model: str
    api_version: str
    base_url: str  # the Live API's address (google-genai's base_url)
    websocket_url: str  # the constrained Live endpoint; the token goes in ?access_token=
    expires_at: str  # RFC 3339
    new_session_expires_at: str
    response_modality: str  # "audio" | "text": what the page asks for (the token locks it)


def live_setup(settings: Settings, instructions: str) -> types.LiveConnectConfig:
    """The setup a direct session is locked to: the same model settings as the agent's."""
    from ..gemini.build import realtime_input_config  # the agent's own mapping of turn detection

    m = settings.model
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO if m.modality == "audio" else types.Modality.TEXT],
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=m.voice)),
            language_code=m.language,
        ),
        system_instruction=instructions,
        temperature=m.temperature,
        enable_affective_dialog=True if m.affective_dialog else None,
        proactivity=types.ProactivityConfig(proactive_audio=True) if m.proactive_audio else None,
        thinking_config=catalogue.thinking_config(m),
        input_audio_transcription=types.AudioTranscriptionConfig() if m.input_transcription else None,
        output_audio_transcription=types.AudioTranscriptionConfig() if m.output_transcription else None,
        realtime_input_config=realtime_input_config(settings.turn_detection),
    )


def _base_url() -> str:
    # google-genai's own switch (the offline stand-in sets it); the public service otherwise
    return (os.environ.get("GOOGLE_GEMINI_BASE_URL") or PUBLIC_BASE_URL).rstrip("/")


async def mint(settings: Settings, instructions: str, *, client: genai.Client | None = None,
               now: dt.datetime | None = None) -> GeminiToken:
    """One ephemeral token for the configured model and setup (google-genai auth_tokens)."""
    d = settings.direct
    now = now or dt.datetime.now(dt.timezone.utc)
    expires = now + dt.timedelta(seconds=d.token_ttl_s)
    new_session = now + dt.timedelta(seconds=min(d.new_session_s, d.token_ttl_s))
    client = client or genai.Client(http_options=types.HttpOptions(api_version=API_VERSION))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.ExperimentalWarning)
        token = await client.aio.auth_tokens.create(config=types.CreateAuthTokenConfig(
            uses=d.token_uses,
            expire_time=expires,
            new_session_expire_time=new_session,
            live_connect_constraints=types.LiveConnectConstraints(
                model=settings.model.name, config=live_setup(settings, instructions)
            ),
            # lock the fields set above (model included); the browser may add others
            lock_additional_fields=[],
        ))
    base = _base_url()
    ws_base = "wss://" + base.split("://", 1)[-1]
    return GeminiToken(
        token=token.name,
        model=f"models/{settings.model.name}",
        api_version=API_VERSION,
        base_url=base,
        websocket_url=f"{ws_base}/ws/google.ai.generativelanguage.{API_VERSION}"
                      ".GenerativeService.BidiGenerateContentConstrained",
        expires_at=expires.isoformat(),
        new_session_expires_at=new_session.isoformat(),
        response_modality=settings.model.modality,
    )


def connect_sources() -> str:
    """The Live API's origins, for the page's Content-Security-Policy (connect-src)."""
    host = _base_url().split("://", 1)[-1].split("/", 1)[0]
    return f"wss://{host} https://{host}"


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status,
                             headers={"Cache-Control": "no-store"})


def handler(settings: Settings):
    """`POST` handler minting one token per request (404 while `direct.enabled` is off)."""
    instructions = settings.instructions()
    client: genai.Client | None = None

    async def gemini_token(request: web.Request) -> web.Response:
        nonlocal client
        if not settings.direct.enabled:
            return _error(404, "direct_mode_off", "direct-to-Gemini mode is off (direct.enabled)")
        if not (os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")):
            return _error(503, "no_api_key", "the server has no GOOGLE_API_KEY to mint Gemini tokens with")
        if client is None:
            client = genai.Client(http_options=types.HttpOptions(api_version=API_VERSION))
        try:
            token = await mint(settings, instructions, client=client)
        except errors.APIError as e:
            # the service's own words, never the key (it travels in a header, not the message)
            logger.warning("Gemini refused to mint an ephemeral token: %s %s", e.code, e.message)
            return _error(502, "gemini_refused", f"Gemini refused the token request ({e.code}: {e.message})")
        return web.json_response(asdict(token), headers={"Cache-Control": "no-store"})

    return gemini_token
