"""The benchmarks' latency trace (`latency.trace_file`, off by default), attached from outside.

`attach(ctx, settings)` (one line in agents/session.py's run_session) does nothing unless
`latency.trace_file` is set. When it is, this module alone writes one job's trace, JSON lines
`{"ev": ..., "t": time.monotonic(), ...}` in `<trace_file>.<pid>.<room>.jsonl`, which the
scripts in bench/ read. Times are CLOCK_MONOTONIC, the clock the offline servers and
time.perf_counter() use on Linux.

Where each event comes from (nothing on the data path calls in here):
  startup      job_received/accepted/assigned/launched from the framework's record of the
               dispatch (RunningJobInfo); job_entry at attach; room events: room_connected
               (connection state), participant (the first person active), agent_published,
               agent_subscribed (the agent's audio track); AgentSession events (via
               observe_call): greet (the agent's first generate_reply), session_started (the
               session leaving its "initializing" state)
  per frame    subclasses the product builds only while tracing (agents/gemini/build.py,
               agents/audio_path.py): `TracedGeminiSession` (in, sent, model, interrupted,
               gemini_connect, gemini_connected) and `TracedAudioOutput` (play, clear)
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
from typing import Any

import numpy as np
from google.genai import types
from livekit import rtc
from livekit.agents import AgentSession, JobContext
from livekit.agents.voice.events import AgentStateChangedEvent, SpeechCreatedEvent

from ..audio_path import LowLatencyAudioOutput
from ..gemini.realtime_session import GEMINI_INPUT_RATE, GeminiRealtimeSession
from ..settings import Settings


class LatencyTrace:
    """Appends `{"ev": ..., "t": monotonic, ...}` lines to a file; cheap, flushed every 0.25 s."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self.expects_greeting = False  # the agent greets first (agent.greet)

    def event(self, ev: str, t: float | None = None, **fields: Any) -> None:
        now = time.monotonic()
        line = json.dumps({"ev": ev, "t": now if t is None else t, **fields}, separators=(",", ":"))
        with self._lock:
            if self._file.closed:  # a frame after the job's end
                return
            self._file.write(line + "\n")
            if now - self._last_flush > 0.25:
                self._file.flush()
                self._last_flush = now

    def close(self) -> None:
        with self._lock:
            self._file.close()


# The job's trace, for the traced objects its run_session builds (a context variable, so that
# jobs sharing a process with the thread executor keep their own files).
_current: contextvars.ContextVar[LatencyTrace | None] = contextvars.ContextVar(
    "latency_trace", default=None)


def current() -> LatencyTrace | None:
    return _current.get()


def peak(pcm) -> int:
    """Peak level of 16-bit PCM (bytes or an int16 memoryview)."""
    a = np.frombuffer(pcm, dtype=np.int16)
    return int(np.abs(a.astype(np.int32)).max()) if len(a) else 0


def dispatch_timeline(ctx: JobContext) -> dict[str, float]:
    """The worker's dispatch timeline for this job, unix seconds (0.0: unknown).

    The framework keeps it in RunningJobInfo, which JobContext holds privately as `_info`:
    the one place the product reads it (tests/test_plugin_contract.py fails if it moves)."""
    info = ctx._info  # noqa: SLF001
    return {
        "job_received": info.received_at,
        "job_accepted": info.accepted_at,
        "job_assigned": info.assigned_at,
        "job_launched": info.launched_at,
    }


def _is_person(p: rtc.Participant) -> bool:
    return p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


def attach(ctx: JobContext, settings: Settings) -> LatencyTrace | None:
    """Open this job's trace and subscribe to the room's events; None when tracing is off.
    Call first thing in the entrypoint (job_entry is now)."""
    lat = settings.latency
    if not lat.trace_file:
        return None
    room = ctx.job.room.name
    tr = LatencyTrace(f"{lat.trace_file}.{os.getpid()}.{room}.jsonl")
    _current.set(tr)
    tr.event("open", room=room, mode=lat.mode)
    tr.event("job_entry")
    offset = time.time() - time.monotonic()  # the dispatch stamps onto the monotonic clock
    for ev, wall in dispatch_timeline(ctx).items():
        if wall:
            tr.event(ev, t=wall - offset)

    found = connected = False

    def participant(p: rtc.RemoteParticipant) -> None:
        # what ctx.wait_for_participant() waits for: a person in the ACTIVE state
        nonlocal found
        if not found and _is_person(p) and p.state == rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE:
            found = True
            tr.event("participant")

    def connection(state: int) -> None:
        # the first CONNECTED comes as Room.connect() (in ctx.connect()) returns
        nonlocal connected
        if state == rtc.ConnectionState.CONN_CONNECTED and not connected:
            connected = True
            tr.event("room_connected")
            for p in list(ctx.room.remote_participants.values()):
                participant(p)

    def subscribed(track: rtc.LocalTrack) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tr.event("agent_subscribed")

    ctx.room.on("connection_state_changed", connection)
    ctx.room.on("participant_active", participant)
    ctx.room.on("local_track_published", lambda pub, track: tr.event("agent_published", kind=int(track.kind)))
    ctx.room.on("local_track_subscribed", subscribed)
    tr.expects_greeting = settings.agent.greet

    async def close() -> None:
        tr.close()

    ctx.add_shutdown_callback(close)
    return tr


def watch_session(session: AgentSession) -> None:
    """The AgentSession's side of the startup (called by observe_call): the greeting asked
    for, the session started. Nothing when this job is not traced."""
    tr = current()
    if tr is None:
        return
    greeted = not tr.expects_greeting
    started = False

    def speech(ev: SpeechCreatedEvent) -> None:
        nonlocal greeted
        if not greeted and ev.user_initiated and ev.source == "generate_reply":  # on_enter's
            greeted = True
            tr.event("greet")

    def state(ev: AgentStateChangedEvent) -> None:
        nonlocal started
        if not started and ev.old_state == "initializing":  # session.start() is returning
            started = True
            tr.event("session_started")

    session.on("speech_created", speech)
    session.on("agent_state_changed", state)


# ---- per-frame hops: subclasses the product builds only while tracing -------------------------
class _TracedAudioSource(rtc.AudioSource):
    """Dates each frame's first sample leaving the sender: captured now, it plays after the
    audio already queued ahead of it (the native queue drains 10 ms every 10 ms)."""

    def __init__(self, trace: LatencyTrace | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trace = trace

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if (tr := self._trace) is not None:
            tr.event("play", q=self.queued_duration, dur=frame.duration, lvl=peak(frame.data))
        await super().capture_frame(frame)


class TracedAudioOutput(LowLatencyAudioOutput):
    """The agent's audio output with `play` (each frame into the WebRTC source) and `clear`
    (an interruption dropping what is queued)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._trace = current()  # built in the job's run_session
        super().__init__(*args, **kwargs)

    def _new_source(self, sample_rate: int, num_channels: int, queue_ms: int) -> rtc.AudioSource:
        return _TracedAudioSource(self._trace, sample_rate, num_channels, queue_size_ms=queue_ms)

    def clear_buffer(self) -> None:
        if (tr := self._trace) is not None:
            tr.event("clear")
        super().clear_buffer()


class TracedGeminiSession(GeminiRealtimeSession):
    """The Gemini session with `in` (a frame from RoomIO), `sent` (a chunk on the socket),
    `model` (the model's audio received), `interrupted`, `gemini_connect(ed)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._trace = current()  # built in the job's run_session or its session.start()
        super().__init__(*args, **kwargs)

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        if (tr := self._trace) is not None:
            tr.event("in", dur=frame.duration, lvl=peak(frame.data))
        super().push_audio(frame)

    async def _send_task(self, session) -> None:
        send = session.send_realtime_input

        async def send_realtime_input(**kwargs) -> None:
            await send(**kwargs)
            if (tr := self._trace) is not None and (audio := kwargs.get("audio")):
                tr.event("sent", dur=len(audio.data) / 2 / GEMINI_INPUT_RATE)

        session.send_realtime_input = send_realtime_input
        await super()._send_task(session)

    def _handle_server_content(self, server_content: types.LiveServerContent) -> None:
        if (tr := self._trace) is not None and server_content.model_turn:
            for part in server_content.model_turn.parts or []:
                if part.inline_data and part.inline_data.data:
                    data = part.inline_data.data
                    tr.event("model", dur=len(data) / 2 / 24000, lvl=peak(data))
        super()._handle_server_content(server_content)

    def _handle_input_speech_started(self) -> None:
        # the plugin's reaction to the model's `interrupted`
        if (tr := self._trace) is not None:
            tr.event("interrupted")
        super()._handle_input_speech_started()

    def _report_connection_acquired(self, acquire_time: float) -> None:
        if (tr := self._trace) is not None:
            tr.event("gemini_connected", took=acquire_time)
        super()._report_connection_acquired(acquire_time)

    def _build_connect_config(self) -> types.LiveConnectConfig:
        # called right before each connect
        if (tr := self._trace) is not None:
            tr.event("gemini_connect")
        return super()._build_connect_config()
