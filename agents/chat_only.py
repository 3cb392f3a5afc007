"""A chat-only person (the web client's "Text only", no microphone) gets text replies only.

The web server marks them in their token (`POST /api/token {"mode": "text"}` → participant
attribute `lk.chat_only=true`); the agent reads it when the person joins, before its session
starts: no audio track is published for them, and Gemini is asked for TEXT responses when the
model can give them (native-audio models reply only in audio: their words then come from
Gemini's output transcription, and the audio is dropped at the agent).
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc

from . import catalogue
from .settings import Settings

logger = logging.getLogger("gemini-agent")

ATTR = "lk.chat_only"
PUBLISH_WAIT_S = 3.0


def is_chat_only(participant: rtc.Participant | None) -> bool:
    return participant is not None and (participant.attributes or {}).get(ATTR) == "true"


def text_settings(settings: Settings) -> Settings:
    """The settings for a chat-only person's session: TEXT responses if the model has them."""
    if settings.model.modality == "text":
        return settings
    features = catalogue.features_for(settings.model.name)
    if features is not None and "TEXT" not in features.response_modalities:
        logger.info("chat-only person: %s replies only in audio; its transcript is sent, its audio dropped",
                    settings.model.name)
        return settings
    return settings.model_copy(update={"model": settings.model.model_copy(update={"modality": "text"})})


async def for_chat(room: rtc.Room, settings: Settings, model, publish: asyncio.Task | None):
    """What run_session (agents/session.py) uses for a chat-only person: (settings, the
    early-connected model or None). An audio track published early for a voice nobody will
    hear is taken back; the AgentSession then gets no audio output."""
    if publish is not None:
        # publishing ends when the person subscribes; a page that never does must not hold us up
        if not (await asyncio.wait({publish}, timeout=PUBLISH_WAIT_S))[0]:
            publish.cancel()
        for sid, pub in list(room.local_participant.track_publications.items()):
            if pub.kind == rtc.TrackKind.KIND_AUDIO:
                await room.local_participant.unpublish_track(sid)
                logger.info("chat-only person: the agent's audio track %s is taken back", sid)
    text = text_settings(settings)
    if text is not settings and model is not None:
        await model.close_early()  # connected early for AUDIO; the session opens one for TEXT
        model = None
    return text, model
