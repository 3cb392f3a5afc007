"""The benchmarks' measurement hooks on the Gemini session (`latency.trace_file`).

A subclass chosen by build.py only when tracing is on, so the data path class
(realtime_session.py) carries no measurement code."""

from __future__ import annotations

from google.genai import types
from livekit import rtc

from .. import audio_path
from .realtime_session import GEMINI_INPUT_RATE, GeminiRealtimeSession


class TracedGeminiSession(GeminiRealtimeSession):
    def push_audio(self, frame: rtc.AudioFrame) -> None:
        if (tr := audio_path.trace()) is not None:
            tr.event("in", dur=frame.duration, lvl=audio_path.peak(frame.data))
        super().push_audio(frame)

    async def _send_task(self, session) -> None:
        send = session.send_realtime_input

        async def send_realtime_input(**kwargs) -> None:
            await send(**kwargs)
            if (tr := audio_path.trace()) is not None and (audio := kwargs.get("audio")):
                tr.event("sent", dur=len(audio.data) / 2 / GEMINI_INPUT_RATE)

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

    def _report_connection_acquired(self, acquire_time: float) -> None:
        if (tr := audio_path.trace()) is not None:
            tr.event("gemini_connected", took=acquire_time)
        super()._report_connection_acquired(acquire_time)

    def _build_connect_config(self) -> types.LiveConnectConfig:
        # called right before each connect
        if (tr := audio_path.trace()) is not None:
            tr.event("gemini_connect")
        return super()._build_connect_config()
