"""One Gemini Live session on the data path: the caller's audio in, the model's events out.

The connection's lifecycle (rotation, reconnect, replay) is the base class's
(connection.py); this class only shapes what flows: 16 kHz audio sent in `input_chunk_ms`
chunks with no resampler, push-to-talk turn markers, and tool declarations matched so that
an equal set does not reconnect."""

from __future__ import annotations

from google.genai import types
from livekit import rtc
from livekit.agents import llm, utils
from livekit.plugins.google.utils import create_tools_config

from .connection import ResilientSession

GEMINI_INPUT_RATE = 16000


class GeminiRealtimeSession(ResilientSession):
    def __init__(self, realtime_model, *, tools: list[llm.Tool] | None = None) -> None:
        super().__init__(realtime_model, policy=realtime_model.policy)
        if tools:
            # before the session's connect task first runs: the setup declares them
            self._tools = llm.ToolContext(tools)
        chunk_ms = realtime_model.input_chunk_ms
        self._chunker = (
            None
            if chunk_ms is None
            else utils.audio.AudioByteStream(
                GEMINI_INPUT_RATE, 1, samples_per_channel=GEMINI_INPUT_RATE * chunk_ms // 1000
            )
        )

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        if self._chunker is None or frame.sample_rate != GEMINI_INPUT_RATE or frame.num_channels != 1:
            super().push_audio(frame)
            return
        # RoomIO already delivers Gemini's format: no resampler holding audio back, and a
        # chunk goes out as soon as it is complete (with 10 ms chunks: every frame at once)
        for chunk in self._chunker.write(frame.data.tobytes()):
            self._send_client_event(
                types.LiveClientRealtimeInput(
                    audio=types.Blob(data=chunk.data.tobytes(), mime_type=f"audio/pcm;rate={GEMINI_INPUT_RATE}")
                )
            )

    def interrupt(self) -> None:
        # The plugin answers every interruption with `activityStart`. With Gemini's own
        # activity detection that does nothing, but in push-to-talk it opens a user turn
        # whenever the framework stops playback, which it does as each of Gemini's replies
        # begins: the reply would cut itself off. There, only the button opens a turn.
        if self._manual_activity_detection:
            return
        super().interrupt()

    async def update_tools(self, tools: list[llm.Tool]) -> None:
        # The plugin compares tools by object identity and reconnects on any change. Tools
        # whose declarations are the ones this connection was set up with (another Agent
        # instance's objects for the same functions) change nothing on the wire: adopt them.
        new = llm.ToolContext(tools)
        if new != self._tools and self._declarations(new) == self._declarations(self._tools):
            self._tools = new
            return
        await super().update_tools(tools)

    def _declarations(self, tools: llm.ToolContext) -> list[types.Tool]:
        declared, _ = create_tools_config(
            tools, tool_behavior=self._opts.tool_behavior, use_parameters_json_schema=False
        )
        return declared

    def end_user_activity(self) -> None:
        """Push-to-talk release: `activityEnd` closes the turn and Gemini answers it. (The
        plugin only sends it from generate_reply, which adds a turn of its own.)"""
        if self._in_user_activity:
            self._in_user_activity = False
            self._send_client_event(types.LiveClientRealtimeInput(activity_end=types.ActivityEnd()))

    # ---- what a meeting changes (agents/meeting.py) -----------------------------------------
    @property
    def connected(self) -> bool:
        """A Live connection is up (not between a restart and its setup)."""
        return self._active_session is not None and not self._session_should_close.is_set()

    @property
    def proactive(self) -> bool:
        return self._opts.proactivity is True

    def reconnect_with(self, *, instructions: str, proactive: bool) -> None:
        """Gemini reads `proactivity` only in a session's setup: set it (and the instructions
        the new setup carries) and rotate the connection; resumption and the replay log
        (connection.py) keep the conversation and the caller's audio. On the Gemini API
        proactive audio needs API v1alpha, which the plugin picks only when it is built."""
        self._opts.proactivity = proactive
        self._opts.instructions = instructions
        if proactive and not self._opts.vertexai:
            self._client._api_client._http_options.api_version = "v1alpha"
        self._mark_restart_needed()

    def _build_connect_config(self) -> types.LiveConnectConfig:
        config = super()._build_connect_config()
        # The plugin always asks for resumption handles; a deployment may not want the
        # service to keep its conversation state.
        if not self._resumption_on:
            config.session_resumption = None
        elif self._opts.vertexai:
            # Vertex says which client message each handle covers: replay exactly the rest
            config.session_resumption.transparent = True
        return config
