"""The agent's brain: livekit-plugins-google's Gemini Live `RealtimeModel`, built from settings.

The plugin reads GOOGLE_API_KEY (and google-genai reads GOOGLE_GEMINI_BASE_URL) from the
environment itself; nothing here touches credentials.
"""

from __future__ import annotations

from google.genai import types
from livekit.agents import NOT_GIVEN
from livekit.plugins.google import realtime
from livekit.plugins.google.realtime import realtime_api

from .settings import ModelSettings, Settings, TurnDetectionSettings


class GeminiRealtimeModel(realtime.RealtimeModel):
    """The plugin's model, with the few options it has no switch for."""

    def __init__(self, *, session_resumption: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self._session_resumption_enabled = session_resumption

    def session(self, *, turn_detection_disabled: bool = False) -> realtime_api.RealtimeSession:
        sess = GeminiRealtimeSession(self)
        self._sessions.add(sess)
        return sess


class GeminiRealtimeSession(realtime_api.RealtimeSession):
    def _build_connect_config(self) -> types.LiveConnectConfig:
        config = super()._build_connect_config()
        # The plugin always asks for resumption handles; a deployment may not want the
        # service to keep its conversation state.
        if not self._realtime_model._session_resumption_enabled:  # type: ignore[attr-defined]
            config.session_resumption = None
        return config


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


def build_realtime_model(settings: Settings, instructions: str) -> GeminiRealtimeModel:
    m = settings.model
    modality = types.Modality.AUDIO if m.modality == "audio" else types.Modality.TEXT

    def given(value):
        return NOT_GIVEN if value is None else value

    return GeminiRealtimeModel(
        session_resumption=m.session_resumption,
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
    )
