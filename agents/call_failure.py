"""When Gemini cannot be reached any more: tell the caller, end the call, say why once.

The connection layer (agents/gemini/connection.py) has already tried everything it may:
its `failure` future carries the reason. The caller hears a short bundled apology (where
the call has audio), the room's chat gets the same words, and the call ends cleanly: a
phone call is hung up (the room is deleted, so LiveKit's SIP service sends BYE), anyone
else sees the agent leave. Never a silent open line.
"""

from __future__ import annotations

import asyncio
import logging
import wave
from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession, JobContext

from .gemini.faults import Fault
from .settings import CONFIG_DIR, ConnectionSettings

logger = logging.getLogger("gemini-agent")

CHAT_TOPIC = "lk.chat"
# the participant attribute clients can show ("the assistant is unavailable")
STATUS_ATTRIBUTE = "agent.unavailable"
APOLOGY_TIMEOUT_S = 20.0


def load_apology(settings: ConnectionSettings) -> rtc.AudioFrame | None:
    """The apology WAV as one frame (mono 16-bit), or None when switched off."""
    if not settings.apology_audio:
        return None
    path = CONFIG_DIR / settings.apology_audio
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        if width != 2:
            raise ValueError(f"connection.apology_audio: {path} must be 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))


async def _frames(apology: rtc.AudioFrame, rate: int) -> AsyncIterator[rtc.AudioFrame]:
    resampler = rtc.AudioResampler(apology.sample_rate, rate, num_channels=1)
    step = apology.sample_rate // 50  # 20 ms
    data = np.frombuffer(apology.data, dtype=np.int16)
    for i in range(0, len(data), step):
        chunk = data[i : i + step]
        for frame in resampler.push(rtc.AudioFrame(chunk.tobytes(), apology.sample_rate, 1, len(chunk))):
            yield frame
    for frame in resampler.flush():
        yield frame


async def end_call_when_gemini_fails(
    ctx: JobContext, session: AgentSession, failure: asyncio.Future[Fault], settings: ConnectionSettings,
    *, hang_up_room: bool,
) -> None:
    try:
        fault = await failure
    except asyncio.CancelledError:
        return  # the call ended normally
    logger.error(
        "call ended: Gemini Live unavailable (%s): %s", fault.cause, fault,
        extra={"room": ctx.room.name},
    )
    local = ctx.room.local_participant
    try:
        await local.set_attributes({STATUS_ATTRIBUTE: fault.cause})
        await local.send_text(settings.apology_text, topic=CHAT_TOPIC)
    except Exception as e:  # the room may be going away too; the hang-up below still runs
        logger.warning("could not post the apology in the room: %s", e)
    apology = load_apology(settings)
    if apology is not None and session.output.audio is not None:
        try:
            handle = session.say(
                settings.apology_text,
                audio=_frames(apology, session.output.audio.sample_rate or apology.sample_rate),
                add_to_chat_ctx=False,
            )
            await asyncio.wait_for(handle.wait_for_playout(), APOLOGY_TIMEOUT_S)
        except Exception as e:
            logger.warning("could not play the apology: %s", e)
    if hang_up_room:
        await ctx.delete_room()  # LiveKit's SIP service hangs up the phone
    else:
        session.shutdown(drain=False)

