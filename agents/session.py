"""One conversation: the room's participant ↔ AgentSession ↔ Gemini Live.

Data path: the participant's WebRTC microphone (and camera / screen share when video is on)
→ the framework's RoomIO → `GeminiRealtimeSession` (16 kHz PCM + JPEG over the Live
WebSocket) → Gemini's 24 kHz speech → RoomIO's audio track back into the room, with both
sides' transcripts published as `lk.transcription` text streams.
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc
from livekit.agents import AgentSession, JobContext, room_io
from livekit.agents.voice.agent_session import VoiceActivityVideoSampler

from . import audio_path, push_to_talk
from .assistant import Assistant
from .model import build_realtime_model
from .participants import follow_participants
from .settings import Settings

logger = logging.getLogger("gemini-agent")


def room_options(settings: Settings, participant: rtc.RemoteParticipant) -> room_io.RoomOptions:
    speaks = settings.model.modality == "audio"
    return room_io.RoomOptions(
        participant_identity=participant.identity,
        # latency.*: 16 kHz / 10 ms input frames by default (see agents/audio_path.py)
        audio_input=audio_path.audio_input_options(
            settings.latency, auto_gain_control=settings.audio.auto_gain_control
        ),
        video_input=settings.video.enabled,
        text_input=True,
        # the low-latency output is ours (run_session sets it); RoomIO builds the default one
        audio_output=speaks and not audio_path.needs_own_output(settings.latency),
        text_output=True,
        # in a meeting the agent turns to the next person instead (agents/participants.py)
        close_on_disconnect=False,
    )


def echo_warmup(settings: Settings, participant: rtc.RemoteParticipant | None) -> float | None:
    """Seconds of caller audio to discard while the first reply plays (None: keep it all)."""
    is_sip = participant is not None and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    if settings.audio.echo_warmup_s <= 0 or (is_sip and not settings.audio.echo_warmup_for_sip):
        return None
    return settings.audio.echo_warmup_s


def build_session(settings: Settings, *, echo_warmup_s: float | None) -> AgentSession:
    fps = settings.video.fps
    return AgentSession(
        llm=build_realtime_model(settings, settings.instructions()),
        # Gemini detects speech itself: no local VAD model to load or run.
        vad=None,
        video_sampler=VoiceActivityVideoSampler(speaking_fps=fps, silent_fps=fps)
        if settings.video.enabled
        else None,
        aec_warmup_duration=echo_warmup_s,
        turn_handling={
            # turns come from Gemini's own activity detection, or the caller's button
            "turn_detection": "manual" if settings.turn_detection.mode == "manual" else "realtime_llm",
            "interruption": {"enabled": settings.turn_detection.interruptions},
        },
    )


async def run_session(ctx: JobContext, settings: Settings) -> AgentSession:
    await ctx.connect()
    participant = await ctx.wait_for_participant()
    is_phone_call = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    logger.info(
        "starting session",
        extra={"room": ctx.room.name, "participant": participant.identity, "sip": is_phone_call},
    )
    audio_path.open_trace(settings.latency, room=ctx.room.name)
    session = build_session(settings, echo_warmup_s=echo_warmup(settings, participant))
    if settings.model.modality == "audio" and audio_path.needs_own_output(settings.latency):
        # RoomIO's audio output with low-latency sizes; RoomIO wraps it for transcript sync
        audio_out = audio_path.build_audio_output(settings.latency, ctx.room)
        session.output.audio = audio_out
        publish = asyncio.create_task(audio_out.start(), name="publish_agent_audio")

        async def close_output() -> None:
            publish.cancel()
            await audio_out.aclose()

        ctx.add_shutdown_callback(close_output)
    # When the conversation ends (the caller left, or end_call), leave the room at once
    # rather than idling in it until LiveKit's departure timeout closes it.
    session.on("close", lambda ev: ctx.shutdown(reason=f"session closed: {ev.reason}"))
    if audio_path.trace() is not None:

        async def close_trace() -> None:
            audio_path.close_trace()

        ctx.add_shutdown_callback(close_trace)
    await session.start(
        agent=Assistant(settings, hang_up_room=is_phone_call),
        room=ctx.room,
        room_options=room_options(settings, participant),
    )
    follow_participants(session, ctx.room)
    if settings.turn_detection.mode == "manual":
        await push_to_talk.enable(session, ctx.room)
    return session
