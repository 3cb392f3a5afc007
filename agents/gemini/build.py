"""The Gemini Live model built from the settings: livekit-plugins-google's `RealtimeModel`
(through GeminiRealtimeModel) with the product's options.

The plugin reads GOOGLE_API_KEY (and google-genai reads GOOGLE_GEMINI_BASE_URL) from the
environment itself; nothing here touches credentials.
"""

from __future__ import annotations

import ssl

from google.genai import types
from livekit.agents import NOT_GIVEN, APIConnectOptions

from .. import audio_path, catalogue, video
from ..settings import ConnectionSettings, ModelSettings, Settings, TurnDetectionSettings
from .connection import ConnectionPolicy
from .model import GeminiRealtimeModel
from .realtime_session import GeminiRealtimeSession
from .transport import http_options


def connection_policy(c: ConnectionSettings) -> ConnectionPolicy:
    return ConnectionPolicy(
        setup_timeout_s=c.setup_timeout_s,
        stall_timeout_s=c.stall_timeout_s,
        reconnect_within_s=c.reconnect_within_s,
        replay_buffer_s=c.replay_buffer_s,
        go_away_margin_s=c.go_away_margin_s,
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
    conn = settings.connection
    session_class: type[GeminiRealtimeSession] = GeminiRealtimeSession
    if lat.trace_file:
        from ..observability.latency_trace import TracedGeminiSession

        session_class = TracedGeminiSession
    return GeminiRealtimeModel(
        session_resumption=m.session_resumption,
        input_chunk_ms=None if audio_path.is_framework(lat) else lat.input_chunk_ms,
        policy=connection_policy(conn),
        session_class=session_class,
        # every failure comes back to the session's own policy (connection.py) at once
        conn_options=APIConnectOptions(max_retry=0, timeout=conn.setup_timeout_s),
        instructions=instructions,
        model=m.name,
        voice=m.voice,
        language=given(m.language),
        modalities=[modality],
        temperature=given(m.temperature),
        enable_affective_dialog=m.affective_dialog if m.affective_dialog else NOT_GIVEN,
        proactivity=m.proactive_audio if m.proactive_audio else NOT_GIVEN,
        thinking_config=given(catalogue.thinking_config(m)),
        # None switches a transcription off; the plugin's default is on for both sides.
        input_audio_transcription=types.AudioTranscriptionConfig() if m.input_transcription else None,
        output_audio_transcription=types.AudioTranscriptionConfig()
        if m.output_transcription
        else None,
        context_window_compression=given(_compression_config(m)),
        realtime_input_config=realtime_input_config(settings.turn_detection),
        # ssl_context None: google-genai builds its own TLS contexts for every session
        http_options=http_options(ssl_context, connect_timeout_s=conn.setup_timeout_s),
        **video.model_options(settings.video),
    )
