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
from livekit.agents import AgentSession, JobContext, llm, room_io

from . import audio_path, noise, phone, push_to_talk, video
from .assistant import Assistant
from .call_failure import end_call_when_gemini_fails
from .gemini import GeminiRealtimeModel, build_realtime_model
from .gemini.transport import tls_context as model_tls_context
from .gemini.warmup import warm_up_client, warm_up_types
from .observability import latency_trace
from .observability.call import observe_call
from . import chat_only, meeting
from .settings import Settings

logger = logging.getLogger("gemini-agent")


def room_options(settings: Settings, participant: rtc.RemoteParticipant) -> room_io.RoomOptions:
    speaks = settings.model.modality == "audio" and not chat_only.is_chat_only(participant)
    return room_io.RoomOptions(
        participant_identity=participant.identity,
        # latency.*: 16 kHz / 10 ms input frames by default (see agents/audio_path.py)
        audio_input=noise.with_noise_suppression(audio_path.audio_input_options(
            settings.latency, auto_gain_control=settings.audio.auto_gain_control
        ), settings.noise),
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


def build_session(
    settings: Settings, *, echo_warmup_s: float | None, model: GeminiRealtimeModel | None = None
) -> AgentSession:
    manual = settings.turn_detection.mode == "manual"
    return AgentSession(
        llm=model if model is not None else build_realtime_model(settings, settings.instructions()),
        # Gemini detects speech itself: no local VAD model to load or run.
        vad=None,
        video_sampler=video.build_video_sampler(settings.video),  # faster while the person speaks
        aec_warmup_duration=echo_warmup_s,
        turn_handling={
            # turns come from Gemini's own activity detection, or the caller's button
            "turn_detection": "manual" if manual else "realtime_llm",
            # With Gemini's detection, barge-in is Gemini's to refuse (activity_handling
            # NO_INTERRUPTION: no `interrupted`, the reply plays on); the framework will not
            # run a realtime model's own detection with its interruptions switched off.
            "interruption": {"enabled": settings.turn_detection.interruptions or not manual},
        },
    )


def fast_startup(settings: Settings) -> bool:
    """`latency.mode: low` also starts the call the fast way (see run_session);
    `framework` keeps the framework's own order: room, participant, then the model."""
    return not audio_path.is_framework(settings.latency)


def prewarm(settings: Settings) -> dict:
    """What a job process builds once, before any call (AgentServer's setup_fnc): the
    instructions text, the TLS context for Gemini, and google-genai's first-use costs (its
    HTTP transport imports, pydantic completing its model classes): ~600 ms of CPU that the
    first Live connect of a fresh process would otherwise pay inside the call."""
    warm: dict = {"instructions": settings.instructions()}
    if fast_startup(settings):
        warm["ssl_context"] = ctx = model_tls_context()
        try:
            client = warm_up_client(ctx, connect_timeout_s=settings.connection.setup_timeout_s)
            model = build_realtime_model(settings, warm["instructions"], ssl_context=ctx)
            warm_up_types(model, llm.ToolContext(Assistant(settings).tools).flatten(), client)
        except Exception as e:  # a warm-up only saves time; the call reports real errors
            logger.warning("prewarm: google-genai warm-up skipped (%s)", e)
    return warm


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()


async def run_session(ctx: JobContext, settings: Settings) -> AgentSession:
    """Connect to the room, wait for the person, start the AgentSession (whose agent greets).

    Fast startup (`latency.mode: low`) overlaps what the framework does one after another:
    the Gemini Live connection (TLS + setup, ~100-250 ms) opens while the room connects and
    the person's media comes up, and the agent's audio track is published (and subscribed by
    the person) before the person is found, so the greeting only waits for the person."""
    latency_trace.attach(ctx, settings)  # the benchmarks' trace, when latency.trace_file is set
    warm = ctx.proc.userdata
    instructions = warm.get("instructions") or settings.instructions()
    fast = fast_startup(settings)
    model = None
    if fast:
        # the agent's instructions and tool declarations (a phone call's, when its dispatch
        # says so: agents/telephony/dispatch.py); the agent built once the person is known
        # brings its own objects for the same functions (no reconnect, see model.py)
        early = phone.early_agent(settings, instructions, ctx.job.metadata) or Assistant(
            settings, instructions=instructions)
        model = build_realtime_model(settings, early.instructions, ssl_context=warm.get("ssl_context"))
        model.connect_early(llm.ToolContext(early.tools).flatten())
        ctx.add_shutdown_callback(model.close_early)

    await ctx.connect()
    audio_out = None
    publish: asyncio.Task | None = None
    if settings.model.modality == "audio" and audio_path.needs_own_output(settings.latency):
        # RoomIO's audio output with low-latency sizes; RoomIO wraps it for transcript sync
        audio_out = audio_path.build_audio_output(settings.latency, ctx.room)

        async def close_output() -> None:
            if publish is not None:
                publish.cancel()
            await audio_out.aclose()

        ctx.add_shutdown_callback(close_output)
        if fast:
            # published now, the person's subscription is negotiated while we wait for them
            publish = asyncio.create_task(audio_out.start(), name="publish_agent_audio")

    participant = await ctx.wait_for_participant()
    voice = not chat_only.is_chat_only(participant)
    if not voice:  # text replies only (agents/chat_only.py)
        settings, model = await chat_only.for_chat(ctx.room, settings, model, publish)
    is_phone_call = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    logger.info(
        "starting session",
        extra={"room": ctx.room.name, "participant": participant.identity, "sip": is_phone_call},
    )
    warmup_s = echo_warmup(settings, participant)
    session = build_session(settings, echo_warmup_s=warmup_s, model=model)
    observer = observe_call(ctx, session, participant)  # metrics and log context (agents/observability)
    if audio_out is not None and voice:
        session.output.audio = audio_out
        if publish is None:
            publish = asyncio.create_task(audio_out.start(), name="publish_agent_audio")
    # When the conversation ends (the caller left, or end_call), leave the room at once
    # rather than idling in it until LiveKit's departure timeout closes it.
    session.on("close", lambda ev: ctx.shutdown(reason=f"session closed: {ev.reason}"))
    agent = (phone.PhoneAssistant(settings, participant, instructions=instructions,
                                  telephony=phone.load_destinations(settings), job_metadata=ctx.job.metadata)
             if is_phone_call else Assistant(settings, instructions=instructions))
    await session.start(
        agent=agent,
        room=ctx.room,
        room_options=room_options(settings, participant),
    )
    if settings.turn_detection.mode == "manual":
        await push_to_talk.enable(session, ctx.room)  # first: no audio reaches Gemini before a press
    gemini = session.current_agent.realtime_llm_session
    observer.watch_gemini(gemini)
    video.speech_activity(session)  # the person's speech, for the per-turn latency metric
    observer.watch_turns(lambda: video.speech_activity(session, create=False))  # (a meeting's too)
    # Gemini unreachable for good (agents/gemini/connection.py): tell the caller, end the call
    failure = asyncio.create_task(end_call_when_gemini_fails(
        ctx, session, gemini.failure, settings.connection, hang_up_room=is_phone_call))
    ctx.add_shutdown_callback(lambda: _cancel(failure))
    video_source = video.attach(session, ctx.room, settings.video)  # screen share first; speech paces frames
    # several people: hear everyone, attribute, reply policy (agents/meeting.py)
    meeting.attach(session, ctx.room, settings, instructions, video_source)
    if is_phone_call:
        phone.attach(ctx, session, agent, settings)  # keypad, call limits, hang-up
    # the web client hints that speech over the greeting is not heard for this long
    await ctx.room.local_participant.set_attributes({"lk.echo_warmup_s": f"{warmup_s or 0:g}"})
    return session
