"""The life of a call's Gemini Live connection: rotation, reconnection, replay, history.

The story. A Gemini Live connection lives about ten minutes. Before its end the service
sends `goAway` with the time left; it may also close with 1011 at any moment, drop the TCP
connection, refuse a reconnect, or stop answering. The caller must notice none of it.

- goAway: the reply in progress plays to its end. At the next turn boundary (no reply
  being generated, no tool call waiting, the handle for that boundary received) — or
  `go_away_margin_s` before the deadline, whichever comes first — the connection is
  rotated: closed and opened again with the latest resumption handle.
- Any loss (close 1011/1006/1000, a reset, a refused upgrade, a setup that is never
  answered within `setup_timeout_s`, a reply, an awaited answer or the transcript of the
  caller's words silent for `stall_timeout_s`): reconnect with backoff for up to `reconnect_within_s`.
- Nothing is lost across either. Every message that matters (caller audio, push-to-talk
  markers, requests for a reply) is kept in a `ReplayLog` until a resumption handle covers
  it; on the new connection the log is sent again first, then what was queued while the
  link was down. So the caller's words spoken during the gap reach the model, and a
  question whose answer was cut off is asked again and answered in full.
- Resumption refused or expired (a refusal during setup while resuming): the handle is
  dropped and a new session starts, given the conversation so far as history (the plugin
  sends its chat context when it has no handle), then the replay.
- Unrecoverable (1007, 1008, credentials refused, or the time bound exceeded): `failure`
  resolves with the reason and the event "gemini_unavailable" is emitted; the call layer
  (agents/call_failure.py) tells the caller and ends the call. Never a silent open line.

The plugin (livekit-plugins-google 1.8.9) already reconnects with a handle, but reconnects
at once on goAway (cutting the reply), gives up after one refused upgrade, waits forever
for a setup, and drops what it had queued. This class keeps its session and its receive
and send loops, and takes over the decisions around them. It reaches into the plugin's
private members; all of them are listed in PLUGIN_MEMBERS_USED and checked by
tests/test_plugin_contract.py, which fails when the plugin changes shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.genai import types
from livekit.plugins.google.realtime import realtime_api

from .faults import Fault, GeminiStalled, classify
from .replay import ReplayLog

logger = logging.getLogger("gemini-agent.connection")


# how the plugin's error lines for a lost connection begin (tests/test_plugin_contract.py)
HANDLED_PLUGIN_ERRORS = ("Error in _main_task", "Gemini Realtime API error:", "error in receive task:",
                         "error in send task:", "error in task gemini-realtime")


class _HandledFaults(logging.Filter):
    """The plugin logs each lost connection as an ERROR with a traceback (twice: its own
    message and its main task's). This class handles those faults and logs each in one
    line, as a warning while it recovers and an error when it gives up."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not msg.startswith(HANDLED_PLUGIN_ERRORS)


logging.getLogger("livekit.plugins.google").addFilter(_HandledFaults())

# The plugin's private members this module relies on (tests/test_plugin_contract.py).
PLUGIN_MEMBERS_USED = (
    "_main_task", "_send_task", "_recv_task", "_handle_go_away", "_emit_error",
    "_mark_restart_needed", "_mark_current_generation_done", "_handle_tool_calls",
    "_msg_ch", "_session_should_close", "_session_error", "_active_session", "_client",
    "_session_resumption_handle", "_resumption_chat_ctx", "_current_generation",
    "_pending_generation_fut", "_num_retries", "_opts",
    # realtime_session.py, for a meeting's reconnect with other options
    "_in_user_activity", "_tools",
)


@dataclass(frozen=True)
class ConnectionPolicy:
    setup_timeout_s: float = 10.0
    stall_timeout_s: float = 8.0
    reconnect_within_s: float = 30.0
    replay_buffer_s: float = 60.0
    go_away_margin_s: float = 1.0
    # how long a fresh handle is awaited after a reply before rotating without it
    handle_grace_s: float = 1.0


_SEND_METHODS = ("send_realtime_input", "send_client_content", "send_tool_response")
# Backoff between reconnect attempts; the last value repeats.
BACKOFF_S = (0.0, 0.2, 0.5, 1.0, 2.0)
# int16 peak that counts as the caller speaking (about -45 dBFS, quieter than speech)
VOICE_PEAK = 200
# this much of the caller's voice with nothing back at all is worth an answer or a transcript
SPOKEN_TO_S = 0.5
# A connection that lived this long, or delivered a message, ends an outage.
HEALTHY_AFTER_S = 2.0


class ResilientSession(realtime_api.RealtimeSession):
    def __init__(self, realtime_model: realtime_api.RealtimeModel, *, policy: ConnectionPolicy) -> None:
        super().__init__(realtime_model)
        # the send/receive tasks and main loop below start once the event loop runs: all
        # state is set before then
        self._policy = policy
        self._replay = ReplayLog(policy.replay_buffer_s)
        self._resumption_on = getattr(realtime_model, "session_resumption_enabled", True)
        self._sent_on_conn = 0
        self._conn_started = 0.0
        self._last_recv = time.monotonic()
        self._last_reply_request = 0.0
        self._last_voice_sent = 0.0
        self._voiced_since_recv = 0.0
        # the service transcribes what it hears: a caller's words met by total silence
        # mean it stopped listening (without transcription, silence may be a choice)
        self._transcribes_input = self._opts.input_audio_transcription is not None
        self._got_message = False
        self._handle_at = 0.0
        self._reply_ended_at = 0.0
        self._awaiting_tools: set[str] = set()
        self._rotation: asyncio.Task[None] | None = None
        self.faults: list[Fault] = []
        self.rotations = 0
        self.failure: asyncio.Future[Fault] = asyncio.get_running_loop().create_future()
        self._watchdog = asyncio.create_task(self._watch_liveness(), name="gemini-liveness")
        self._bound_setup(self._client.aio.live)

    # ---- the outer loop: reconnect, or give up and say why -------------------------------
    async def _main_task(self) -> None:  # type: ignore[override]
        outage_since: float | None = None
        attempt = 0
        while not self._msg_ch.closed:
            self._num_retries = 0
            try:
                await super()._main_task()
                return  # the session is closing
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the plugin gave up on this connection: our decision now
                fault = classify(e.__cause__ or e)
            self.faults.append(fault)
            now = time.monotonic()
            connected = self._conn_started > 0
            healthy = connected and (self._got_message or now - self._conn_started >= HEALTHY_AFTER_S)
            if outage_since is None or healthy:
                outage_since, attempt = now, 0
            self._conn_started, self._got_message = 0.0, False
            self.emit("gemini_connection", {"event": "fault", "cause": fault.cause, "fatal": fault.fatal})

            resuming = self._session_resumption_handle is not None
            if fault.fatal and resuming and not connected:
                # the handle may be what was refused: start anew with the conversation
                logger.warning("resumption refused (%s); starting a new session with the history", fault)
                self._drop_handle()
                continue
            if fault.fatal:
                return self._give_up(fault)
            waited = now - outage_since
            if waited >= self._policy.reconnect_within_s:
                return self._give_up(Fault(fault.cause, True, (
                    f"no Gemini connection for {waited:.0f} s (bound connection.reconnect_within_s"
                    f" = {self._policy.reconnect_within_s:g} s); last error: {fault}")))
            delay = min(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], self._policy.reconnect_within_s - waited)
            attempt += 1
            logger.warning("Gemini connection lost (%s); reconnecting in %.1f s (attempt %d)", fault, delay, attempt)
            await asyncio.sleep(delay)

    def _give_up(self, fault: Fault) -> None:
        logger.error("Gemini Live unavailable, ending the call: %s", fault)
        if not self.failure.done():
            self.failure.set_result(fault)
        self.emit("gemini_unavailable", fault)

    def _drop_handle(self) -> None:
        self._session_resumption_handle = None
        self._resumption_chat_ctx = None

    def _emit_error(self, error: Exception, recoverable: bool) -> None:
        # every fault is recoverable as far as the framework is concerned: this class decides
        # when a call cannot go on, and then ends it itself (see `failure`)
        super()._emit_error(error, recoverable=True)

    # ---- setup bounded in time -------------------------------------------------------------
    def _bound_setup(self, live: Any) -> None:
        """google-genai's connect() waits for setupComplete with no time limit."""
        connect = live.connect
        session = self

        @contextlib.asynccontextmanager
        async def connect_within(*args: Any, **kwargs: Any):
            cm = connect(*args, **kwargs)
            try:
                conn = await asyncio.wait_for(cm.__aenter__(), session._policy.setup_timeout_s)
            except asyncio.TimeoutError:
                raise GeminiStalled(
                    f"setup not answered within {session._policy.setup_timeout_s:g} s "
                    "(connection.setup_timeout_s)") from None
            session._on_connected()
            try:
                yield conn
            except BaseException as e:
                if not await cm.__aexit__(type(e), e, e.__traceback__):
                    raise
            else:
                await cm.__aexit__(None, None, None)

        live.connect = connect_within

    def _on_connected(self) -> None:
        self._conn_started = self._last_recv = time.monotonic()
        self._sent_on_conn = 0
        self._awaiting_tools.clear()
        self.emit("gemini_connection", {"event": "connected", "resumed": self._session_resumption_handle is not None,
                                        "after_fault": bool(self.faults)})

    # ---- sending: log what matters, replay it on a new connection -------------------------
    async def _send_task(self, session: Any) -> None:
        for method in _SEND_METHODS:
            setattr(session, method, self._logged(method, getattr(session, method)))
        # first what the model may not have (oldest first), then the queue, which starts
        # with what was never sent on the last connection
        pending = self._replay.take()
        if pending:
            logger.info("sending %d messages again on the new connection", len(pending))
        for method, kwargs in pending:
            await getattr(session, method)(**kwargs)
        await super()._send_task(session)

    def _logged(self, method: str, send: Any) -> Any:
        async def logged_send(**kwargs: Any) -> None:
            await send(**kwargs)
            self._sent_on_conn += 1
            self._replay.record(self._sent_on_conn, method, kwargs)
            if method == "send_realtime_input" and (voiced := self._voiced_s(kwargs.get("audio"))):
                self._last_voice_sent = time.monotonic()
                self._voiced_since_recv += voiced
            elif method == "send_tool_response":
                for resp in kwargs.get("function_responses") or []:
                    self._awaiting_tools.discard(getattr(resp, "id", None) or "")
            elif (method == "send_client_content" and kwargs.get("turn_complete", True) is not False) \
                    or (method == "send_realtime_input" and "activity_end" in kwargs):
                self._last_reply_request = time.monotonic()

        return logged_send

    def _voiced_s(self, audio: Any) -> float:
        """Seconds of the caller's voice in an audio chunk (0 for silence)."""
        data = getattr(audio, "data", None)
        if not data or not self._transcribes_input:
            return 0.0
        pcm = np.frombuffer(data, dtype=np.int16)
        return len(pcm) / 16000 if len(pcm) and int(np.abs(pcm[::4]).max()) >= VOICE_PEAK else 0.0

    def _mark_restart_needed(self, on_error: bool = False) -> None:
        # The plugin drops what is still queued when a connection ends; put it at the head of
        # the next connection's queue instead.
        carry = []
        if not self._session_should_close.is_set():
            while not self._msg_ch.empty():
                carry.append(self._msg_ch.recv_nowait())
        super()._mark_restart_needed(on_error=on_error)
        for message in carry:
            self._msg_ch.send_nowait(message)

    # ---- receiving: liveness, handles, turn boundaries ---------------------------------------
    async def _recv_task(self, session: Any) -> None:
        receive = session.receive

        async def observed():
            async for message in receive():
                self._observe(message)
                yield message

        session.receive = observed
        await super()._recv_task(session)

    def _observe(self, message: types.LiveServerMessage) -> None:
        self._last_recv = time.monotonic()
        self._voiced_since_recv = 0.0
        self._got_message = True
        update = message.session_resumption_update
        if update and update.resumable and update.new_handle:
            self._handle_at = self._last_recv
            if update.last_consumed_client_message_index is not None:
                self._replay.covered_through(update.last_consumed_client_message_index)
            else:
                self._replay.clear()
        if message.tool_call:
            for call in message.tool_call.function_calls or []:
                self._awaiting_tools.add(call.id or "")

    def _mark_current_generation_done(self) -> None:
        if self._current_generation is not None and not self._current_generation._done:
            self._reply_ended_at = time.monotonic()
            if not self._resumption_on:
                # no handles: the chat context (re-sent as history) holds the finished turn
                self._replay.clear()
        super()._mark_current_generation_done()

    # ---- goAway: finish the reply, rotate at the boundary ------------------------------------
    def _handle_go_away(self, go_away: types.LiveServerGoAway) -> None:
        time_left = _seconds(go_away.time_left)
        logger.info("goAway: %.1f s left on this connection; rotating at the next turn boundary", time_left)
        self.emit("gemini_connection", {"event": "go_away", "time_left": time_left})
        if self._rotation is None or self._rotation.done():
            deadline = time.monotonic() + time_left - self._policy.go_away_margin_s
            self._rotation = asyncio.create_task(self._rotate_by(deadline, self._active_session))

    async def _rotate_by(self, deadline: float, conn: Any) -> None:
        while time.monotonic() < deadline:
            if self._active_session is not conn:
                return  # reconnected meanwhile for another reason
            if self._at_turn_boundary():
                break
            await asyncio.sleep(0.02)
        if self._active_session is not conn:
            return
        self.rotations += 1
        self.emit("gemini_connection", {"event": "rotated", "at_boundary": time.monotonic() < deadline})
        self._mark_restart_needed()

    def _at_turn_boundary(self) -> bool:
        gen = self._current_generation
        if gen is not None and not gen._done:
            return False
        if self._pending_generation_fut is not None and not self._pending_generation_fut.done():
            return False
        if self._awaiting_tools:
            return False
        # the handle for this boundary normally follows the reply's turnComplete
        waited = time.monotonic() - self._reply_ended_at
        return self._handle_at >= self._reply_ended_at or waited >= self._policy.handle_grace_s

    # ---- stalls: an open connection that stopped answering -----------------------------------
    async def _watch_liveness(self) -> None:
        stall_s = self._policy.stall_timeout_s
        while not self._msg_ch.closed:
            await asyncio.sleep(min(0.25, stall_s / 4))
            if self._active_session is None or self._session_should_close.is_set():
                continue
            gen = self._current_generation
            replying = gen is not None and not gen._done
            requested = (self._pending_generation_fut is not None and not self._pending_generation_fut.done()) \
                or self._last_reply_request > self._last_recv
            spoken_to = self._voiced_since_recv >= SPOKEN_TO_S
            if self._awaiting_tools or not (replying or requested or spoken_to):  # a tool running is on us
                continue
            since = max(self._last_recv, self._last_reply_request if requested else 0.0,
                        self._last_voice_sent if spoken_to and not (replying or requested) else 0.0)
            silent = time.monotonic() - since
            if silent > stall_s:
                logger.warning("Gemini stalled: nothing received for %.1f s while a reply was due", silent)
                self._session_error = GeminiStalled(
                    f"no message for {silent:.1f} s while a reply or a transcript was due "
                    "(connection.stall_timeout_s)")
                self._mark_restart_needed(on_error=True)

    async def aclose(self) -> None:
        for task in (self._watchdog, self._rotation):
            if task is not None:
                task.cancel()
        await super().aclose()
        if not self.failure.done():
            self.failure.cancel()


def _seconds(duration: str | None) -> float:
    """A protobuf Duration as JSON ("10s", "0.5s") in seconds."""
    if not duration:
        return 0.0
    try:
        return float(str(duration).strip().rstrip("s"))
    except ValueError:
        return 0.0

