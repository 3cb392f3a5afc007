"""The agent's brain: livekit-plugins-google's Gemini Live `RealtimeModel`, built from settings.

The plugin reads GOOGLE_API_KEY (and google-genai reads GOOGLE_GEMINI_BASE_URL) from the
environment itself; nothing here touches credentials.
"""

from __future__ import annotations

import os
import ssl

import certifi
from google.genai import Client as GenAIClient
from google.genai import types
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, llm, utils
from livekit.plugins.google import realtime
from livekit.plugins.google.realtime import realtime_api
from livekit.plugins.google.utils import create_tools_config

from . import audio_path
from .settings import ModelSettings, Settings, TurnDetectionSettings


class GeminiRealtimeModel(realtime.RealtimeModel):
    """The plugin's model, with the few options it has no switch for."""

    def __init__(
        self, *, session_resumption: bool = True, input_chunk_ms: int | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self._session_resumption_enabled = session_resumption
        # None: the plugin's own input path (resampler + 50 ms chunks)
        self._input_chunk_ms = input_chunk_ms

        # a session opened ahead of the AgentSession (connect_early), not yet handed over
        self._early: GeminiRealtimeSession | None = None

    def connect_early(self, tools: list[llm.Tool]) -> GeminiRealtimeSession:
        """Open the Live connection now (TLS + setup), e.g. while the room connects; the
        AgentSession's activity then takes this session instead of opening its own.

        `tools` are the agent's (flattened): the setup declares them, so the activity's
        update_tools() finds nothing to change and does not reconnect."""
        sess = GeminiRealtimeSession(self, tools=tools)
        self._sessions.add(sess)
        self._early = sess
        return sess

    async def close_early(self) -> None:
        """Close a session opened by connect_early() that nobody took (the job ended first)."""
        sess, self._early = self._early, None
        if sess is not None:
            await sess.aclose()

    def session(self, *, turn_detection_disabled: bool = False) -> realtime_api.RealtimeSession:
        if (sess := self._early) is not None:
            self._early = None
            return sess
        sess = GeminiRealtimeSession(self)
        self._sessions.add(sess)
        return sess


class GeminiRealtimeSession(realtime_api.RealtimeSession):
    def __init__(self, realtime_model: GeminiRealtimeModel, *, tools: list[llm.Tool] | None = None) -> None:
        super().__init__(realtime_model)
        if tools:
            # before the session's connect task first runs: the setup declares them
            self._tools = llm.ToolContext(tools)
        chunk_ms = realtime_model._input_chunk_ms
        # 16 kHz mono from RoomIO goes out in chunks of this size, with no resampler
        self._chunker = (
            None
            if chunk_ms is None
            else utils.audio.AudioByteStream(
                audio_path.GEMINI_INPUT_RATE, 1,
                samples_per_channel=audio_path.GEMINI_INPUT_RATE * chunk_ms // 1000,
            )
        )

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        if (tr := audio_path.trace()) is not None:
            tr.event("in", dur=frame.duration, lvl=audio_path.peak(frame.data))
        if (
            self._chunker is None
            or frame.sample_rate != audio_path.GEMINI_INPUT_RATE
            or frame.num_channels != 1
        ):
            super().push_audio(frame)
            return
        # RoomIO already delivers Gemini's format: no resampler holding audio back, and a
        # chunk goes out as soon as it is complete (with 10 ms chunks: every frame at once)
        for chunk in self._chunker.write(frame.data.tobytes()):
            self._send_client_event(
                types.LiveClientRealtimeInput(
                    audio=types.Blob(
                        data=chunk.data.tobytes(),
                        mime_type=f"audio/pcm;rate={audio_path.GEMINI_INPUT_RATE}",
                    )
                )
            )

    # ---- measurement hooks (latency.trace_file; nothing happens when it is off) ----------
    async def _send_task(self, session) -> None:
        if audio_path.trace() is not None:
            send = session.send_realtime_input

            async def send_realtime_input(**kwargs) -> None:
                await send(**kwargs)
                if (tr := audio_path.trace()) is not None and (audio := kwargs.get("audio")):
                    tr.event("sent", dur=len(audio.data) / 2 / audio_path.GEMINI_INPUT_RATE)

            session.send_realtime_input = send_realtime_input
        await super()._send_task(session)

    def _handle_server_content(self, server_content: types.LiveServerContent) -> None:
        if (tr := audio_path.trace()) is not None and server_content.model_turn:
            for part in server_content.model_turn.parts or []:
                if part.inline_data and part.inline_data.data:
                    data = part.inline_data.data
                    tr.event("model", dur=len(data) / 2 / 24000, lvl=audio_path.peak(data))
        super()._handle_server_content(server_content)

    def _handle_input_speech_started(self) -> None:
        # the plugin's reaction to the model's `interrupted`
        if (tr := audio_path.trace()) is not None:
            tr.event("interrupted")
        super()._handle_input_speech_started()

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

    def _report_connection_acquired(self, acquire_time: float) -> None:
        if (tr := audio_path.trace()) is not None:
            tr.event("gemini_connected", took=acquire_time)
        super()._report_connection_acquired(acquire_time)

    def _build_connect_config(self) -> types.LiveConnectConfig:
        # called right before each connect
        if (tr := audio_path.trace()) is not None:
            tr.event("gemini_connect")
        config = super()._build_connect_config()
        # The plugin always asks for resumption handles; a deployment may not want the
        # service to keep its conversation state.
        if not self._realtime_model._session_resumption_enabled:  # type: ignore[attr-defined]
            config.session_resumption = None
        return config


def tls_context() -> ssl.SSLContext:
    """The TLS context google-genai builds for its Live WebSocket (SSL_CERT_FILE, else
    certifi's roots; SSL_CERT_DIR). Left to itself, google-genai loads the trust store three
    times per client (httpx, aiohttp, websockets), ~20 ms each: built once per job process
    (prewarm) and shared, it costs nothing per call."""
    return ssl.create_default_context(
        cafile=os.environ.get("SSL_CERT_FILE", certifi.where()),
        capath=os.environ.get("SSL_CERT_DIR"),
    )


def http_options(ssl_context: ssl.SSLContext) -> types.HttpOptions:
    """The plugin's own HttpOptions (its connect timeout), with the shared TLS context, and
    the Live WebSocket without permessage-deflate: its messages are base64 PCM and JPEG,
    which hardly compress, so deflating ~50 messages a second each way only costs CPU
    (~4 % of a call's busy Python time, py-spy). google-genai hands `compression` to
    websockets' connect() only (httpx and aiohttp never see it)."""
    return types.HttpOptions(
        timeout=int(DEFAULT_API_CONNECT_OPTIONS.timeout * 1000),
        async_client_args={"ssl": ssl_context, "verify": ssl_context, "compression": None},
    )


def warm_up_client(ssl_context: ssl.SSLContext) -> GenAIClient:
    """Build one google-genai client (and drop it): its first construction imports the
    HTTP transport stack (~150 ms), which would otherwise land on the first call's path."""
    return GenAIClient(api_key="prewarm", http_options=http_options(ssl_context))


def warm_up_types(model: GeminiRealtimeModel, tools: list[llm.Tool], client: GenAIClient) -> None:
    """pydantic completes google-genai's model classes on their first use: ~100-250 ms of
    CPU inside the first Live connect (the setup config) and at the first messages each
    way. Build each kind once, with no connection, so a call finds them ready.

    Uses the plugin's own config builder on a session object that never runs (no event
    loop here); if the plugin changes shape this warms less, it never fails the process."""
    from google.genai import _live_converters as conv
    from google.genai import _transformers as t

    sess = GeminiRealtimeSession.__new__(GeminiRealtimeSession)
    sess._opts = model._opts
    sess._realtime_model = model
    sess._tools = llm.ToolContext(tools)
    sess._session_resumption_handle = None
    config = realtime_api.RealtimeSession._build_connect_config(sess)
    conv._LiveConnectParameters_to_mldev(
        api_client=client._api_client,
        from_object=types.LiveConnectParameters(
            model=t.t_model(client._api_client, model._opts.model), config=config
        ).model_dump(exclude_none=True),
    )
    # client -> server: the greeting request (client_content), microphone audio
    turns = [types.Content(parts=[types.Part(text="warm up")], role="user")]
    conv._LiveClientContent_to_mldev(
        from_object=t.t_client_content(turns, True).model_dump(mode="json", exclude_none=True)
    )
    conv._LiveSendRealtimeInputParameters_to_mldev(
        from_object=types.LiveSendRealtimeInputParameters.model_validate(
            {"audio": types.Blob(data=b"\0\0", mime_type="audio/pcm;rate=16000")}
        )
    )
    # server -> client: setupComplete, then a reply's audio, transcripts and bookkeeping
    for msg in (
        {"setupComplete": {}},
        {"serverContent": {"modelTurn": {"parts": [{"inlineData": {
            "mimeType": "audio/pcm;rate=24000", "data": "AAA="}}]}}},
        {"serverContent": {"outputTranscription": {"text": "hi"}, "inputTranscription": {"text": "hi"}}},
        {"serverContent": {"generationComplete": True, "turnComplete": True, "interrupted": False}},
        {"sessionResumptionUpdate": {"newHandle": "h", "resumable": True}},
        {"usageMetadata": {"promptTokenCount": 1, "responseTokenCount": 1, "totalTokenCount": 2}},
        {"toolCall": {"functionCalls": [{"id": "1", "name": "end_call", "args": {}}]}},
        {"goAway": {"timeLeft": "10s"}},
    ):
        types.LiveServerMessage._from_response(
            response=conv._LiveServerMessage_from_mldev(msg),
            kwargs=types.LiveServerMessage().model_dump(),
        )


def realtime_input_config(td: TurnDetectionSettings) -> types.RealtimeInputConfig:
    activity_handling = (
        types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS
        if td.interruptions
        else types.ActivityHandling.NO_INTERRUPTION
    )
    if td.mode == "manual":
        # Push-to-talk: the client marks turns with activityStart / activityEnd.
        detection = types.AutomaticActivityDetection(disabled=True)
    else:
        detection = types.AutomaticActivityDetection(
            disabled=False,
            start_of_speech_sensitivity=types.StartSensitivity[
                f"START_SENSITIVITY_{td.start_sensitivity.upper()}"
            ],
            end_of_speech_sensitivity=types.EndSensitivity[
                f"END_SENSITIVITY_{td.end_sensitivity.upper()}"
            ],
            prefix_padding_ms=td.prefix_padding_ms,
            silence_duration_ms=td.silence_duration_ms,
        )
    return types.RealtimeInputConfig(
        automatic_activity_detection=detection, activity_handling=activity_handling
    )


def _thinking_config(m: ModelSettings) -> types.ThinkingConfig | None:
    if not m.thinking.enabled:
        return None
    return types.ThinkingConfig(
        thinking_budget=m.thinking.budget_tokens, include_thoughts=m.thinking.include_thoughts
    )


def _compression_config(m: ModelSettings) -> types.ContextWindowCompressionConfig | None:
    c = m.context_compression
    if not c.enabled:
        return None
    return types.ContextWindowCompressionConfig(
        trigger_tokens=c.trigger_tokens,
        sliding_window=types.SlidingWindow(target_tokens=c.target_tokens),
    )


def build_realtime_model(
    settings: Settings, instructions: str, *, ssl_context: ssl.SSLContext | None = None
) -> GeminiRealtimeModel:
    m = settings.model
    modality = types.Modality.AUDIO if m.modality == "audio" else types.Modality.TEXT

    def given(value):
        return NOT_GIVEN if value is None else value

    lat = settings.latency
    return GeminiRealtimeModel(
        session_resumption=m.session_resumption,
        input_chunk_ms=None if audio_path.is_framework(lat) else lat.input_chunk_ms,
        instructions=instructions,
        model=m.name,
        voice=m.voice,
        language=given(m.language),
        modalities=[modality],
        temperature=given(m.temperature),
        enable_affective_dialog=m.affective_dialog if m.affective_dialog else NOT_GIVEN,
        proactivity=m.proactive_audio if m.proactive_audio else NOT_GIVEN,
        thinking_config=given(_thinking_config(m)),
        # None switches a transcription off; the plugin's default is on for both sides.
        input_audio_transcription=types.AudioTranscriptionConfig() if m.input_transcription else None,
        output_audio_transcription=types.AudioTranscriptionConfig()
        if m.output_transcription
        else None,
        context_window_compression=given(_compression_config(m)),
        realtime_input_config=realtime_input_config(settings.turn_detection),
        # None: google-genai builds its own TLS contexts for every session
        http_options=http_options(ssl_context) if ssl_context is not None else NOT_GIVEN,
    )
