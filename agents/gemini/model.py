"""The plugin's `RealtimeModel` with what the product adds: sessions that survive the
connection (connection.py), an early connect, and a switch for session resumption."""

from __future__ import annotations

from livekit.agents import llm
from livekit.plugins.google import realtime

from .connection import ConnectionPolicy
from .realtime_session import GeminiRealtimeSession


class GeminiRealtimeModel(realtime.RealtimeModel):
    def __init__(
        self,
        *,
        session_resumption: bool = True,
        input_chunk_ms: int | None = None,
        policy: ConnectionPolicy = ConnectionPolicy(),
        session_class: type[GeminiRealtimeSession] = GeminiRealtimeSession,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.session_resumption_enabled = session_resumption
        # None: the plugin's own input path (resampler + 50 ms chunks)
        self.input_chunk_ms = input_chunk_ms
        self.policy = policy
        # the benchmarks' traced subclass (agents/observability/latency_trace.py) when tracing
        self._session_class = session_class
        # a session opened ahead of the AgentSession (connect_early), not yet handed over
        self._early: GeminiRealtimeSession | None = None

    def connect_early(self, tools: list[llm.Tool]) -> GeminiRealtimeSession:
        """Open the Live connection now (TLS + setup), e.g. while the room connects; the
        AgentSession's activity then takes this session instead of opening its own.

        `tools` are the agent's (flattened): the setup declares them, so the activity's
        update_tools() finds nothing to change and does not reconnect."""
        sess = self._session_class(self, tools=tools)
        self._sessions.add(sess)
        self._early = sess
        return sess

    def early_session(self) -> GeminiRealtimeSession | None:
        return self._early

    async def close_early(self) -> None:
        """Close a session opened by connect_early() that nobody took (the job ended first)."""
        sess, self._early = self._early, None
        if sess is not None:
            await sess.aclose()

    def session(self, *, turn_detection_disabled: bool = False) -> GeminiRealtimeSession:
        if (sess := self._early) is not None:
            self._early = None
            return sess
        sess = self._session_class(self)
        self._sessions.add(sess)
        return sess
