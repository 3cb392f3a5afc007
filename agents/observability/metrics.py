"""The product's Prometheus metrics, fed by the agents framework's AgentSession events.

`observe_call` subscribes one call's session (and room) to these; nothing on the data path
calls into this module. Other layers report what only they see through two functions:
`gemini_connection_event` (the Gemini connection layer: reconnects, faults) and
`phone_transfer` (telephony). Served by the framework's own metrics endpoint
(`observability.metrics_port`), summed over job processes (see multiproc.py).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Literal

from livekit import rtc
from livekit.agents import AgentSession, llm
from livekit.agents.metrics.usage import LLMModelUsage
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    CloseEvent,
    ConversationItemAddedEvent,
    FunctionToolsExecutedEvent,
    SessionUsageUpdatedEvent,
)
from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger("gemini-agent.metrics")

# The framework's own e2e_latency needs the model to report the end of the person's speech
# before its reply; livekit-plugins-google 1.8.9 reports it only after the reply (and its
# realtime ttft as -1), so with Gemini's turn detection it never comes. The product measures
# the turn itself: the last frame of the person's speech at the agent (agents/video.py's
# SpeechActivity on the session's audio input) to the agent's state turning "speaking".
TURN_LATENCY = Histogram(
    "gemini_agent_turn_latency_seconds",
    "End of the person's speech (as the agent heard it) to the agent's first audio, by call "
    "kind (browser, phone, meeting)", ["kind"],
    buckets=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0),
)
TURNS = Counter("gemini_agent_turns", "Replies the agent spoke or wrote (one per assistant "
                "message), by call kind (browser, phone, meeting)", ["kind"])
TOKENS = Counter("gemini_agent_model_tokens", "Gemini tokens used, by kind "
                 "(input_audio, input_text, input_image, input_cached, output_audio, output_text)",
                 ["kind"])
CALLS = Counter("gemini_agent_calls", "Calls started, by kind (browser, phone)", ["kind"])
ACTIVE_CALLS = Gauge("gemini_agent_active_calls", "Calls in progress, by kind (browser, phone, "
                     "meeting = more than one person)", ["kind"], multiprocess_mode="livesum")
CALLS_ENDED = Counter("gemini_agent_calls_ended", "Calls ended, by reason (the framework's close "
                      "reason: participant_disconnected, user_initiated, job_shutdown, error, ...)",
                      ["reason"])
TOOL_CALLS = Counter("gemini_agent_tool_calls", "Function tool calls, by tool", ["tool"])
TOOL_ERRORS = Counter("gemini_agent_tool_errors", "Function tool calls that failed, by tool", ["tool"])
GEMINI_EVENTS = Counter("gemini_agent_gemini_connection_events", "Gemini Live connection events: "
                        "kind reconnect or fault, with their cause", ["kind", "cause"])
PHONE_TRANSFERS = Counter("gemini_agent_phone_transfers", "Phone calls transferred, by result "
                          "(ok, failed)", ["result"])

CallKind = Literal["browser", "phone", "meeting"]


def gemini_connection_event(kind: Literal["reconnect", "fault"], cause: str) -> None:
    """For the Gemini connection layer: a reconnect (cause e.g. go_away, resumption) or a fault
    (cause e.g. timeout, closed_1011, setup_refused)."""
    GEMINI_EVENTS.labels(kind=kind, cause=cause or "unknown").inc()


def phone_transfer(ok: bool) -> None:
    """For telephony: a SIP transfer was attempted."""
    PHONE_TRANSFERS.labels(result="ok" if ok else "failed").inc()


def _is_person(p: rtc.RemoteParticipant) -> bool:
    return p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


class CallObserver:
    """One call: its kind while it lasts, its turns, tools, tokens, and how it ended."""

    def __init__(self, session: AgentSession, room: rtc.Room, participant: rtc.RemoteParticipant) -> None:
        self.room = room
        self.kind: CallKind = (
            "phone" if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP else "browser")
        self.ended = False
        self.session = session
        self._tokens: dict[tuple[str, str, str], int] = {}  # the session's totals counted so far
        CALLS.labels(kind=self.kind).inc()
        ACTIVE_CALLS.labels(kind=self.kind).inc()
        session.on("session_usage_updated", self._on_usage)
        session.on("conversation_item_added", self._on_item)
        session.on("function_tools_executed", self._on_tools)
        session.on("close", self._on_close)
        room.on("participant_connected", self._on_participant)
        self._on_participant()

    def _on_participant(self, *_: object) -> None:
        # a meeting once more than one person is in the room (it stays one for this call)
        people = [p for p in self.room.remote_participants.values() if _is_person(p)]
        if not self.ended and self.kind != "meeting" and len(people) > 1:
            ACTIVE_CALLS.labels(kind=self.kind).dec()
            self.kind = "meeting"
            ACTIVE_CALLS.labels(kind=self.kind).inc()

    _TOKEN_FIELDS = (("input_audio", "input_audio_tokens"), ("input_text", "input_text_tokens"),
                     ("input_image", "input_image_tokens"), ("input_cached", "input_cached_tokens"),
                     ("output_audio", "output_audio_tokens"), ("output_text", "output_text_tokens"))

    def _on_usage(self, ev: SessionUsageUpdatedEvent) -> None:
        # the session's running totals per model: count what is new since the last update
        for usage in ev.usage.model_usage:
            if not isinstance(usage, LLMModelUsage):
                continue
            for kind, field in self._TOKEN_FIELDS:
                key = (usage.provider, usage.model, kind)
                total = getattr(usage, field)
                if total > self._tokens.get(key, 0):
                    TOKENS.labels(kind=kind).inc(total - self._tokens.get(key, 0))
                    self._tokens[key] = total

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage) or item.role != "assistant":
            return
        TURNS.labels(kind=self.kind).inc()

    def watch_turns(self, speech: Callable[[], object]) -> None:
        """Per-turn latency from `speech()` (the session's current SpeechActivity, whose
        `last_voice_at` is monotonic; a meeting swaps the audio input, and its own with it):
        a reply that starts after a person last spoke counts once, under the call's kind."""
        answered = 0.0

        def on_state(ev: AgentStateChangedEvent) -> None:
            nonlocal answered
            heard = getattr(speech(), "last_voice_at", 0.0)
            if ev.new_state == "speaking" and heard > answered:
                answered = time.monotonic()
                TURN_LATENCY.labels(kind=self.kind).observe(answered - heard)

        self.session.on("agent_state_changed", on_state)

    def _on_tools(self, ev: FunctionToolsExecutedEvent) -> None:
        for call, output in ev.zipped():
            TOOL_CALLS.labels(tool=call.name).inc()
            if output is not None and output.is_error:
                TOOL_ERRORS.labels(tool=call.name).inc()

    def watch_gemini(self, rt_session: object) -> None:
        """The Gemini connection layer's events (agents/gemini/connection.py): faults by
        cause, rotations after goAway, reconnects, and the call ended when it gives up."""

        def on_connection(ev: dict) -> None:
            if ev.get("event") == "fault":
                gemini_connection_event("fault", ev.get("cause", ""))
            elif ev.get("event") == "rotated":
                gemini_connection_event("reconnect", "go_away")
            elif ev.get("event") == "connected" and ev.get("after_fault"):
                gemini_connection_event("reconnect", "fault")

        rt_session.on("gemini_connection", on_connection)  # type: ignore[attr-defined]
        rt_session.on("gemini_unavailable", lambda fault: self.end("gemini_unavailable"))  # type: ignore[attr-defined]

    def _on_close(self, ev: CloseEvent) -> None:
        self.end(ev.reason.value if hasattr(ev.reason, "value") else str(ev.reason))

    def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        ACTIVE_CALLS.labels(kind=self.kind).dec()
        CALLS_ENDED.labels(reason=reason).inc()
