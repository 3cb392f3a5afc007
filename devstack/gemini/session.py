"""One websocket connection: handshake, input handling, turn-taking and replies.

Default behaviour is "echo": each user utterance (found by server-side activity
detection, or bracketed by activityStart/activityEnd) is answered with the same audio
resampled to 24 kHz, paced at real time. Text turns get a deterministic text reply,
spoken as synthetic audio when the session's modality is AUDIO. `Script` overrides
all of it per turn.

Connection faults (faults.py) are looked up at four moments: setup, the start and the
audio of a reply, a tool call, and the end of a turn; resumption handles (resumption.py)
are issued when the session is idle. What the model got is recorded per session
(`received` with each client message's index, `turns`) and per conversation
(records.py), for tests to assert on.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from aiohttp import WSMsgType, web

from . import catalogue
from . import proactive
from . import protocol as p
from .audio import INPUT_RATE, OUTPUT_RATE, duration_s, float_to_pcm, pcm_rate, pcm_to_float, resample, resample_pcm, synth_speech
from .faults import Fault, FaultEvent, format_time_left
from .models import known_models
from .records import TurnRecord
from .resumption import ResumptionState
from .script import TurnPlan
from .vad import EnergyVad, VadConfig

if TYPE_CHECKING:
    from .server import OfflineGeminiServer

log = logging.getLogger("devstack.gemini")

_INSTRUCTIONS_RE = re.compile(r"\s*<instructions>\s*(.*?)\s*</instructions>\s*", re.S)
_AUDIO_TOKENS_PER_S = 25


class SessionClosed(Exception):
    """Raised to waiters when the session ends before their condition is met."""


class _Faulted(Exception):
    """Raised inside a reply when an injected fault ended or stalled the connection."""


@dataclass
class ReceivedMessage:
    # "setup", "audio", "video", "text", "activity_start", "activity_end",
    # "audio_stream_end", "client_content", "tool_response", "context_update"
    kind: str
    body: Any  # normalised (snake_case); blobs decoded to protocol.Blob
    at: float  # time.monotonic() on arrival
    # the client message's index on this connection: setup is 0, the next message 1
    # (one realtime_input may yield several records with the same index)
    index: int = -1


@dataclass
class SentMessage:
    msg: dict
    at: float

    @property
    def kind(self) -> str:
        return next(iter(self.msg))

    @property
    def content(self) -> dict:
        return self.msg.get("serverContent") or {}


@dataclass
class VideoFrame:
    data: bytes
    mime_type: str
    at: float


@dataclass
class Conversation:
    """What a resumption handle restores."""

    id: str = ""  # "conv-N", kept across resumptions
    turn_count: int = 0
    history: list[dict] = field(default_factory=list)
    system_instruction: str = ""

    def copy(self) -> "Conversation":
        return copy.deepcopy(self)


@dataclass
class _Turn:
    source: str  # "audio" | "text" | "content"
    audio: np.ndarray | None = None  # 16 kHz float, for audio turns
    text: str = ""
    instructions: str | None = None


class LiveSession:
    def __init__(self, server: "OfflineGeminiServer", ws: web.WebSocketResponse, request: web.Request,
                 index: int, api_version: str, constrained: bool) -> None:
        self.server = server
        self.index = index  # 1-based, in connection order
        self.path = request.path
        self.headers = dict(request.headers)
        self.api_version = api_version
        self.constrained = constrained
        self.connected_at = time.monotonic()

        # recorded for assertions
        self.setup: dict | None = None
        self.model: str | None = None
        self.received: list[ReceivedMessage] = []
        self.sent: list[SentMessage] = []
        self.audio_in = bytearray()  # all user audio, 16 kHz PCM
        self.video_frames: list[VideoFrame] = []
        self.utterances: list[bytes] = []  # each detected user turn, 16 kHz PCM
        self.replies: list[bytearray] = []  # audio of each reply as sent, 24 kHz PCM
        self.declined: list[str] = []  # user turns proactive audio left unanswered (proactive.py)
        self.resumed_from: str | None = None
        self.resumed_state: Conversation | None = None  # the conversation as resumed (turns so far)
        self.handles: list[str] = []  # resumable handles issued, in order
        self.turns: list[TurnRecord] = []  # turns this connection answered or began to
        self.client_history: list[dict] = []  # client_content turns sent with turnComplete false
        self.transparent = False  # sessionResumption.transparent
        self.consumed_index = -1  # index of the last client message taken in (setup: 0)
        self.ended_at: float | None = None
        self.close_code: int | None = None  # set when the server closed
        self.close_reason: str | None = None

        self.conversation = Conversation()
        self.stalled = False
        self.setup_done = asyncio.Event()
        self.closed = asyncio.Event()

        self._ws = ws
        self._transport = request.transport
        self._msg_index = -1
        self._handle_index = 0  # consumed_index of the last handle issued on this connection
        self._reported_index = -1  # consumed_index at the last sessionResumptionUpdate
        self._current: TurnRecord | None = None
        self._taking_in = False
        self._reply_running = False  # the reply task has begun (set in _respond)
        self._fault_kind: str | None = None  # the fault that ended/stalled this connection
        self._send_lock = asyncio.Lock()
        self._queue: asyncio.Queue[_Turn] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._reply_task: asyncio.Task | None = None
        self._reply_started = False
        self._tool_waiters: dict[str, asyncio.Future] = {}
        self._waiters: list[tuple[str, Callable[[Any], bool], asyncio.Future]] = []
        self._timers: set[asyncio.Task] = set()
        self._vad: EnergyVad | None = None
        self._manual_capture: list[np.ndarray] | None = None
        self.text_mode = False
        self.input_transcription = False
        self.output_transcription = False
        self.resumption_enabled = False
        self.interruptible = True

    # ---- public helpers for tests ------------------------------------------------
    @property
    def kinds(self) -> list[str]:
        return [m.kind for m in self.received]

    async def wait_for(self, pred: Callable[[ReceivedMessage], bool], timeout: float = 10.0) -> ReceivedMessage:
        """First received message matching pred (already received ones count)."""
        return await self._wait("received", pred, timeout)

    async def wait_for_sent(self, pred: Callable[[SentMessage], bool], timeout: float = 10.0) -> SentMessage:
        """First message sent by the server matching pred."""
        return await self._wait("sent", pred, timeout)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def send_go_away(self, time_left: str = "10s", close_after: bool = True) -> None:
        """Send goAway now; close the socket (`server.deadline_close`) once time_left has
        passed, if the client is still there (a reply still going is cut then)."""
        await self._send(p.go_away(time_left), force=True)
        if close_after:
            self._later(p.parse_duration_s(time_left), self._deadline_close)

    async def _deadline_close(self) -> None:
        if self._ws.closed:
            return
        self._fault_kind = "go_away"
        await self.close(*self.server.deadline_close)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._ws.closed:
            return
        self.close_code, self.close_reason = code, reason
        # A close reason is limited to 123 bytes on the wire; the service truncates too.
        msg = reason.encode()[:123].decode(errors="ignore").encode()
        await self._ws.close(code=code, message=msg)

    def drop(self) -> None:
        """Abort the TCP connection with no close frame (the client sees 1006)."""
        self.close_code, self.close_reason = 1006, "connection dropped (no close frame)"
        if self._transport is not None:
            self._transport.abort()

    def stall(self) -> None:
        """Stop answering: the current reply stops silently, later turns are ignored."""
        self.stalled = True
        if self._reply_task and not self._reply_task.done() and self._reply_task is not asyncio.current_task():
            self._reply_task.cancel()

    @property
    def conversation_log(self):
        """This session's conversation as the server records it (records.ConversationLog)."""
        return self.server.conversation(self.conversation.id)

    @property
    def faults(self) -> list[FaultEvent]:
        """Faults fired on this connection."""
        return [e for e in self.server.fault_log if e.session == self.index]

    def unstall(self) -> None:
        self.stalled = False
        self._fault_kind = None

    async def push_message(self, msg: dict) -> None:
        """Send an arbitrary server message (escape hatch for tests)."""
        await self._send(msg, force=True)

    # ---- lifecycle ----------------------------------------------------------------
    async def run(self) -> None:
        try:
            if await self._handshake():
                await self._read_loop()
        except p.ProtocolError as e:
            log.info("session %d: closing %d %s", self.index, e.code, e.reason)
            await self.close(e.code, e.reason)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        self.ended_at = time.monotonic()
        if self._current is not None and self._current.outcome == "pending":
            self._finish_record(self._current)
        tasks = [t for t in (self._worker, self._reply_task, *self._timers) if t and not t.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except BaseException:
                pass
        for fut in self._tool_waiters.values():
            if not fut.done():
                fut.cancel()
        if not self._ws.closed:
            try:
                await self._ws.close()
            except Exception:  # a dropped transport
                pass
        self.setup_done.set()
        self.closed.set()
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(SessionClosed(f"session {self.index} closed"))

    async def _handshake(self) -> bool:
        msg = await self._ws.receive()
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return False
        wrapper, body = p.parse_client_message(msg.data)
        self._msg_index = 0
        self._record(wrapper, body)
        if wrapper != "setup":
            raise p.ProtocolError(p.CLOSE_INVALID, "The first message must be a setup message.")
        if self.constrained:  # an ephemeral token's locked fields (auth_tokens.py)
            body = self.server.tokens.constrain(self.token, body)
        self.setup = body
        model = str(body.get("model") or "")
        if not model:
            raise p.ProtocolError(p.CLOSE_INVALID, "Request contains an invalid argument: model is required.")
        # "models/x" (Gemini API) or "[projects/p/locations/l/]publishers/google/models/x" (Vertex AI)
        name = model.rsplit("models/", 1)[-1]
        self.model = name
        if name not in known_models(self.server.extra_models):
            raise p.ProtocolError(
                p.CLOSE_POLICY,
                f"models/{name} is not found for API version {self.api_version}, or is not supported "
                "for bidiGenerateContent. Call ListModels to see the list of available models.",
            )
        catalogue.check_setup(name, body, self.api_version)  # what this model lacks, refused as the service does
        fault = self._take_fault("setup", None)
        if fault is not None and fault.kind != "stall":
            await self._fire(fault, None, "setup")
            return False
        sr = body.get("session_resumption")
        self.resumption_enabled = sr is not None
        self.transparent = bool((sr or {}).get("transparent"))
        handle = (sr or {}).get("handle")
        resumed: ResumptionState | None = None
        if handle:
            resumed = self.server.handles.resume(handle)  # ProtocolError 1007 if unknown/expired
            self.conversation = resumed.conversation
            self.resumed_from = handle
            self.resumed_state = resumed.conversation.copy()
        else:
            self.conversation.id = self.server._new_conversation_id()
        self.server.conversation(self.conversation.id).sessions.append(self.index)
        gc = body.get("generation_config") or {}
        mods = [str(m).upper() for m in (gc.get("response_modalities") or body.get("response_modalities") or ["AUDIO"])]
        self.text_mode = "TEXT" in mods and "AUDIO" not in mods
        self.input_transcription = body.get("input_audio_transcription") is not None
        self.output_transcription = body.get("output_audio_transcription") is not None
        ric = body.get("realtime_input_config") or {}
        self.interruptible = str(ric.get("activity_handling") or "") != "NO_INTERRUPTION"
        vad = VadConfig.from_setup(ric)
        self._vad = None if vad.disabled else EnergyVad(vad)
        if resumed is not None:  # the audio of a turn in progress when the handle was issued
            if self._vad is not None and resumed.vad is not None:
                self._vad.restore(resumed.vad)
            self._manual_capture = resumed.manual_capture
        si = p.content_text(body.get("system_instruction"))
        if si:
            self.conversation.system_instruction = si
        self.consumed_index = 0
        if fault is not None:  # a setup stall
            await self._fire(fault, None, "setup")
        elif self.server.script.stall_setup:
            self.stalled = True
        else:
            await self._send(p.setup_complete())
            self._start_lifetime()
        self._worker = asyncio.create_task(self._turn_worker(), name=f"gemini-session-{self.index}-turns")
        if self.resumption_enabled and self.transparent:
            self._timers.add(asyncio.create_task(self._resumption_ticker(), name=f"gemini-session-{self.index}-resumption"))
        self.setup_done.set()
        return True

    def _start_lifetime(self) -> None:
        """The service's connection lifetime: goAway `go_away_lead_s` before it ends."""
        life = self.server.connection_lifetime_s
        if life is None:
            return
        lead = min(self.server.go_away_lead_s, life)

        async def go_away() -> None:
            self._log_fault(FaultEvent(time.monotonic(), "go_away", "lifetime", self.index, self.conversation.id,
                                       self.conversation.turn_count, "lifetime", time_left=format_time_left(lead)))
            await self.send_go_away(format_time_left(lead))

        self._later(life - lead, go_away)

    async def _read_loop(self) -> None:
        async for msg in self._ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                self._msg_index += 1
                wrapper, body = p.parse_client_message(msg.data)
                self._taking_in = True  # no handle mid-message: its state would be half in
                try:
                    await self._on_message(wrapper, body)
                finally:
                    self._taking_in = False
                self.consumed_index = self._msg_index
            elif msg.type == WSMsgType.ERROR:
                break

    # ---- input --------------------------------------------------------------------
    async def _on_message(self, wrapper: str, body: dict) -> None:
        if wrapper == "setup":
            self._record(wrapper, body)
            raise p.ProtocolError(p.CLOSE_INVALID, "setup must be sent once, as the first message.")
        if wrapper == "realtime_input":
            await self._on_realtime_input(body)
        elif wrapper == "client_content":
            self._record(wrapper, body)
            await self._on_client_content(body)
        elif wrapper == "tool_response":
            self._record(wrapper, body)
            for fr in body.get("function_responses") or []:
                fut = self._tool_waiters.get(str(fr.get("id")))
                if fut and not fut.done():
                    fut.set_result(fr)
        elif wrapper == "context_update":
            self._record(wrapper, body)
            si = p.content_text(body.get("system_instruction"))
            if si:
                self.conversation.system_instruction = si

    async def _on_realtime_input(self, body: dict) -> None:
        blobs: list[p.Blob] = list(body.get("media_chunks") or [])
        if "audio" in body:
            blobs.append(body["audio"])
        if "video" in body:
            blobs.append(body["video"])
        for blob in blobs:
            # state first, then the record: waiters' predicates may look at the state
            if blob.mime_type.lower().startswith("audio/"):
                pcm = resample_pcm(blob.data, pcm_rate(blob.mime_type), INPUT_RATE)
                self.audio_in += pcm
                self._record("audio", blob)
                await self._on_audio(pcm)
            else:
                self.video_frames.append(VideoFrame(blob.data, blob.mime_type, time.monotonic()))
                self._record("video", blob)
        if "text" in body:
            self._record("text", body["text"])
            await self._interrupt()
            self._queue.put_nowait(_Turn("text", text=body["text"]))
        if "activity_start" in body:
            self._record("activity_start", body["activity_start"])
            if self._vad is not None:
                raise p.ProtocolError(p.CLOSE_INVALID, "Explicit activity control is not supported when automatic activity detection is enabled.")
            self._manual_capture = []
            if self.interruptible:
                await self._interrupt()
        if "activity_end" in body:
            self._record("activity_end", body["activity_end"])
            if self._vad is not None:
                raise p.ProtocolError(p.CLOSE_INVALID, "Explicit activity control is not supported when automatic activity detection is enabled.")
            if self._manual_capture is not None:
                captured, self._manual_capture = self._manual_capture, None
                if captured:
                    self._queue.put_nowait(_Turn("audio", audio=np.concatenate(captured)))
        if "audio_stream_end" in body:
            self._record("audio_stream_end", body["audio_stream_end"])
            if self._vad is not None and (ev := self._vad.flush()) is not None:
                self._queue.put_nowait(_Turn("audio", audio=ev.utterance))

    async def _on_audio(self, pcm: bytes) -> None:
        samples = pcm_to_float(pcm)
        if self._vad is None:
            if self._manual_capture is not None:
                self._manual_capture.append(samples)
            return
        for ev in self._vad.feed(samples):
            if ev.kind == "start":
                if self.interruptible:
                    await self._interrupt()
            elif ev.utterance is not None and len(ev.utterance):
                self._queue.put_nowait(_Turn("audio", audio=ev.utterance))

    async def _on_client_content(self, body: dict) -> None:
        entries = [((t or {}).get("role") or "user", p.content_text(t)) for t in body.get("turns") or []]
        for role, text in entries:
            self.conversation.history.append({"role": role, "text": text, "source": "client_content"})
        if not body.get("turn_complete"):
            self.client_history.extend({"role": role, "text": text} for role, text in entries)
            return
        user_text, instructions = "", None
        if entries:
            role, text = entries[-1]
            if role == "user":
                m = _INSTRUCTIONS_RE.fullmatch(text)
                if m:  # newer models: instructions wrapped into a user turn
                    instructions = m.group(1)
                elif text.strip() == "." and len(entries) > 1 and entries[-2][0] == "model":
                    instructions = entries[-2][1]  # older models: model turn + "." user turn
                elif text.strip() == ".":
                    # "answer now" after the user's words were synced without turn_complete
                    # (a typed chat message): the model answers those words
                    user_text = self._unanswered_user_text()
                else:
                    user_text = text
            else:
                instructions = text
        await self._interrupt()
        self._queue.put_nowait(_Turn("content", text=user_text, instructions=instructions))

    def _unanswered_user_text(self) -> str:
        """The user's words in the history since the model last spoke, "." left out."""
        words: list[str] = []
        for entry in reversed(self.conversation.history):
            if entry["role"] == "model":
                break
            if entry["role"] == "user" and entry["text"].strip() not in ("", "."):
                words.insert(0, entry["text"].strip())
        return " ".join(words)

    # ---- turns --------------------------------------------------------------------
    async def _turn_worker(self) -> None:
        while True:
            turn = await self._queue.get()
            if self.stalled:
                continue
            self._reply_task = asyncio.create_task(self._respond(turn), name=f"gemini-session-{self.index}-reply")
            try:
                await asyncio.wait([self._reply_task])
            finally:
                if not self._reply_task.done():
                    self._reply_task.cancel()
            t, self._reply_task = self._reply_task, None
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                if isinstance(exc, _Faulted) and self.stalled:
                    continue  # a stall: later turns are read and ignored
                if isinstance(exc, (ConnectionError, SessionClosed, _Faulted)):
                    return
                log.error("session %d: reply failed", self.index, exc_info=exc)
                await self.close(p.CLOSE_INTERNAL, "Internal error encountered.")
                return

    async def _interrupt(self) -> None:
        """Barge-in: stop the reply in progress and tell the client."""
        t = self._reply_task
        if t is None or t.done():
            return
        for _ in range(100):  # a reply task not yet begun: let it hear its turn first
            if self._reply_running or t.done():
                break
            await asyncio.sleep(0)
        started = self._reply_started
        pending_calls = [cid for cid, f in self._tool_waiters.items() if not f.done()]
        if self._current is not None and self._current.outcome == "pending":
            self._current.outcome = "interrupted"
        t.cancel()
        await asyncio.wait([t])
        if pending_calls:
            await self._send(p.tool_call_cancellation(pending_calls))
        if started:
            self.conversation.history.append({"role": "model", "text": "", "interrupted": True})
            await self._send(p.server_content(interrupted=True))
            await self._send(p.server_content(turn_complete=True))

    async def _respond(self, turn: _Turn) -> None:
        self._reply_running = True
        conv = self.conversation
        conv.turn_count += 1
        n = conv.turn_count
        plan: TurnPlan = self.server.script.plan_for(n)
        self._reply_started = False
        record = self._current = self._start_record(turn, n, plan)
        try:
            await self._answer(turn, n, plan, record)
        finally:
            self._reply_running = False
            self._finish_record(record)

    async def _answer(self, turn: _Turn, n: int, plan: TurnPlan, record: TurnRecord) -> None:
        conv = self.conversation
        fault = self._take_fault("reply", n)
        if fault is not None and not fault.after_s:
            await self._fire(fault, n, "reply")  # before anything of the turn is sent
            fault = None
        if plan.stall:  # legacy TurnPlan field
            self.stalled = True
            return

        prompt_tokens = {"TEXT": _text_tokens(conv.system_instruction)}
        user_text = record.transcript
        if turn.source == "audio":
            assert turn.audio is not None
            secs = len(turn.audio) / INPUT_RATE
            self.utterances.append(record.audio)
            conv.history.append({"role": "user", "text": user_text, "audio_s": round(secs, 3)})
            prompt_tokens["AUDIO"] = math.ceil(secs * _AUDIO_TOKENS_PER_S)
            if self.input_transcription:  # the words were heard, even if the reply is interrupted
                await asyncio.shield(self._send(p.server_content(input_transcription={"text": user_text})))
        else:
            if turn.source == "text":
                conv.history.append({"role": "user", "text": user_text, "source": "realtime_input"})
            prompt_tokens["TEXT"] += _text_tokens(user_text) + _text_tokens(turn.instructions or "")
        await self._send_resumption_update(resumable=False)  # the model is generating

        if proactive.declines(self, turn, user_text):
            await proactive.decline(self, user_text)
            return
        reply_text, reply_audio = plan.reply_text, plan.reply_audio
        if plan.tool_calls:
            outcome = await self._call_tools(plan, n)
            reply_text = f"{plan.reply_text} {outcome}" if plan.reply_text else outcome
        elif reply_text is None:
            reply_text = user_text if turn.source == "audio" else _auto_reply(turn)

        if not self.text_mode and reply_audio is None:
            if turn.source == "audio" and not plan.tool_calls:
                reply_audio = float_to_pcm(resample(turn.audio, INPUT_RATE, OUTPUT_RATE))  # echo
            else:
                reply_audio = synth_speech(reply_text)

        record.reply_text = reply_text
        await self._emit_reply(reply_text, None if self.text_mode else reply_audio, fault, n)
        await self._send(p.server_content(generation_complete=True))
        if self.server.script.send_usage_metadata:
            response_tokens = {"TEXT": _text_tokens(reply_text)}
            if reply_audio is not None and not self.text_mode:
                response_tokens = {"AUDIO": math.ceil(duration_s(reply_audio, OUTPUT_RATE) * _AUDIO_TOKENS_PER_S)}
            await self._send(p.usage_metadata(prompt_tokens, response_tokens))
        await self._send(p.server_content(turn_complete=True))
        record.outcome = "completed"
        conv.history.append({"role": "model", "text": reply_text})

        # a handle only when idle: another turn already heard means the model goes on
        await self._send_resumption_update(resumable=self._queue.empty())
        if plan.go_away:  # legacy TurnPlan fields
            await self.send_go_away(plan.go_away)
        if plan.close:
            await self.close(*plan.close)
        fault = self._take_fault("after_turn", n)
        if fault is not None:
            await self._fire(fault, n, "after_turn")

    def _start_record(self, turn: _Turn, n: int, plan: TurnPlan) -> TurnRecord:
        if turn.source == "audio":
            assert turn.audio is not None
            audio = float_to_pcm(turn.audio)
            transcript = plan.transcript or f"utterance {n} ({len(turn.audio) / INPUT_RATE:.2f} s)"
        else:
            audio, transcript = b"", turn.text
        record = TurnRecord(conversation=self.conversation.id, session=self.index, n=n, source=turn.source,
                            transcript=transcript, audio=audio, started_at=time.monotonic())
        self.turns.append(record)
        self.server.conversation(self.conversation.id).turns.append(record)
        return record

    def _finish_record(self, record: TurnRecord) -> None:
        if record.outcome == "pending":
            record.outcome = "cut"
            record.fault = self._fault_kind
        if record.ended_at is None:
            record.ended_at = time.monotonic()

    async def _call_tools(self, plan: TurnPlan, n: int) -> str:
        """Emit the scripted toolCall, wait for every response, describe the results."""
        calls = [spec.wire() for spec in plan.tool_calls]
        loop = asyncio.get_running_loop()
        futs = {c["id"]: loop.create_future() for c in calls}
        self._tool_waiters.update(futs)
        fault = self._take_fault("tool_call", n)
        try:
            self._reply_started = True
            await self._send(p.tool_call(calls))
            self.conversation.history.append({"role": "model", "function_calls": calls})
            if fault is not None:  # after_s after the toolCall, or when the responses are in
                await asyncio.wait(list(futs.values()), timeout=fault.after_s)
                await self._fire(fault, n, "tool_call")
            responses = [await futs[c["id"]] for c in calls]
        finally:
            for cid in futs:
                self._tool_waiters.pop(cid, None)
        self.conversation.history.append({"role": "user", "function_responses": responses})
        return "; ".join(_describe_result(c, r) for c, r in zip(calls, responses))

    async def _emit_reply(self, text: str, audio: bytes | None, fault: Fault | None = None, n: int = 0) -> None:
        """Send the reply, paced at real time; `fault` fires `fault.after_s` into it."""
        words = re.findall(r"\s*\S+", text)
        self._reply_started = True
        if audio is None:  # TEXT modality: a few text parts, no pacing needed
            for i in range(0, len(words), 4):
                await self._send(p.server_content(model_turn={"parts": [p.text_part("".join(words[i : i + 4]))]}))
                if fault is not None:
                    fault, f = None, fault
                    await self._fire(f, n, "reply")
            if fault is not None:
                await self._fire(fault, n, "reply")
            return
        sent = bytearray()
        self.replies.append(sent)
        chunk = int(OUTPUT_RATE * self.server.chunk_ms / 1000) * 2
        chunks = [audio[i : i + chunk] for i in range(0, len(audio), chunk)] or [b""]
        loop = asyncio.get_running_loop()
        lead = self.server.lead_ms / 1000
        t0 = loop.time()
        played = 0.0
        words_sent = 0
        for i, c in enumerate(chunks):
            if fault is not None and played >= (fault.after_s or 0.0):
                fault, f = None, fault
                await self._fire(f, n, "reply")
            # Real-time pacing: never more than `lead` ahead of the audio's own clock.
            delay = t0 + played - lead - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._send(p.server_content(model_turn={"parts": [p.audio_part(c)]}))
            sent += c
            played += duration_s(c, OUTPUT_RATE)
            if self._current is not None:
                self._current.reply_audio_s = played
            if self.output_transcription and words:
                due = math.ceil(len(words) * (i + 1) / len(chunks))
                if due > words_sent:
                    piece = "".join(words[words_sent:due])
                    words_sent = due
                    await self._send(p.server_content(output_transcription={"text": piece}))
        if fault is not None:  # a reply shorter than after_s: at its end
            await self._fire(fault, n, "reply")

    # ---- faults and resumption ----------------------------------------------------
    def _take_fault(self, during: str, turn: int | None) -> Fault | None:
        if self.stalled or self._ws.closed:
            return None
        fault = self.server.script.faults.take(during, turn)
        if fault is None and self.server.random is not None:
            fault = self.server.random.take(during)
        return fault

    def _log_fault(self, event: FaultEvent) -> None:
        self.server._fault_fired(event)
        log.info("session %d: fault %s during %s (turn %s, %s)", self.index, event.kind, event.during,
                 event.turn, event.source)

    async def _fire(self, fault: Fault, turn: int | None, during: str) -> None:
        """Do what the fault says; raises _Faulted when the connection is gone or stalled."""
        self._log_fault(FaultEvent(
            time.monotonic(), fault.kind, during, self.index, self.conversation.id or None, turn, fault.source,
            code=fault.code if fault.kind == "close" else None,
            time_left=fault.time_left if fault.kind == "go_away" else None,
            after_s=fault.after_s if during in ("reply", "tool_call") else None))
        if fault.kind == "go_away":
            await self.send_go_away(fault.time_left)
            return
        self._fault_kind = fault.kind
        if fault.kind == "stall":
            self.stall()
            if during == "setup":
                return
        elif fault.kind == "close":
            await self.close(fault.code, fault.reason)
        elif fault.kind == "drop":
            self.drop()
        if during != "setup":
            raise _Faulted(fault.kind)

    def _busy(self) -> bool:
        reply = self._reply_task is not None and not self._reply_task.done()
        return reply or not self._queue.empty() or any(not f.done() for f in self._tool_waiters.values())

    async def _send_resumption_update(self, resumable: bool) -> None:
        """sessionResumptionUpdate: a fresh handle, or `resumable: false` and none."""
        if not self.resumption_enabled:
            return
        index = self.consumed_index
        if resumable and not self._taking_in:
            state = ResumptionState(
                conversation=self.conversation.copy(),
                vad=self._vad.snapshot() if self._vad is not None else None,
                manual_capture=[a.copy() for a in self._manual_capture] if self._manual_capture is not None else None,
                issued_at=time.monotonic(), session=self, last_consumed_index=index)
            handle = self.server.handles.issue(state)
            self.handles.append(handle)
            self._handle_index = index
            msg = p.session_resumption_update(handle, True, index if self.transparent else None)
        else:
            msg = p.session_resumption_update(None, False, self._handle_index if self.transparent else None)
        self._reported_index = index
        await self._send(msg)

    async def _resumption_ticker(self) -> None:
        """Transparent sessions: a fresh handle whenever idle and more input was taken in."""
        while True:
            await asyncio.sleep(self.server.resumption_update_interval_s)
            if self.stalled or self._taking_in or self._busy() or self.consumed_index <= self._reported_index:
                continue
            try:
                await self._send_resumption_update(resumable=True)
            except (ConnectionError, SessionClosed):
                return

    # ---- plumbing -----------------------------------------------------------------
    async def _send(self, msg: dict, force: bool = False) -> None:
        if self.stalled and not force:
            return
        async with self._send_lock:
            if self._ws.closed:
                raise ConnectionResetError("websocket closed")
            await self._ws.send_str(json.dumps(msg))
        item = SentMessage(msg, time.monotonic())
        self.sent.append(item)
        self._notify("sent", item)

    def _record(self, kind: str, body: Any) -> None:
        item = ReceivedMessage(kind, body, time.monotonic(), self._msg_index)
        self.received.append(item)
        self._notify("received", item)

    def _notify(self, stream: str, item: Any) -> None:
        for s, pred, fut in list(self._waiters):
            if s == stream and not fut.done():
                try:
                    ok = pred(item)
                except Exception:
                    ok = False
                if ok:
                    fut.set_result(item)

    async def _wait(self, stream: str, pred: Callable[[Any], bool], timeout: float) -> Any:
        for item in list(self.received if stream == "received" else self.sent):
            try:
                if pred(item):
                    return item
            except Exception:
                pass
        if self.closed.is_set():
            raise SessionClosed(f"session {self.index} closed")
        fut = asyncio.get_running_loop().create_future()
        entry = (stream, pred, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove(entry)

    def _later(self, delay: float, action: Callable[[], Any]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await action()

        task = asyncio.create_task(run())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def _auto_reply(turn: _Turn) -> str:
    if turn.instructions:
        return f"Hello! You asked me to: {turn.instructions.strip()}"
    if turn.text.strip() and turn.text.strip() != ".":
        return f"You said: {turn.text.strip()}"
    return "Hello! How can I help you today?"


def _describe_result(call: dict, response: dict) -> str:
    body = response.get("response") or {}
    if isinstance(body, dict) and "error" in body:
        return f"{call['name']} failed: {_as_text(body['error'])}"
    result = body.get("output", body) if isinstance(body, dict) else body
    return f"{call['name']} returned {_as_text(result)}"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
