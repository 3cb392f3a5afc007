"""The audio path between the room and Gemini, tuned for latency.

Framework defaults (livekit-agents 1.8.9 + livekit-plugins-google 1.8.9) and what they cost:

  input   RoomIO hands over 24 kHz audio in 50 ms frames; the plugin resamples it to 16 kHz
          (rtc.AudioResampler holds back ~30 ms) and sends 50 ms chunks; a frame's first
          sample waits up to ~80 ms in the agent before it is on the model's socket.
  output  RoomIO re-chunks the model's audio into 50 ms frames and feeds an AudioSource with
          a 200 ms queue; once the model runs ahead of real time (it does), every sample waits
          behind ~200 ms of queued audio before it leaves the WebRTC sender.

The low-latency path (`latency.mode: low`, the product's default):

  input   RoomIO delivers 16 kHz mono in 10 ms frames (libwebrtc resamples in the stream
          itself; the plugin's resampler is bypassed) and `GeminiRealtimeSession.push_audio`
          sends every `input_chunk_ms` of audio as soon as it is there (10 ms: each frame).
  output  `LowLatencyAudioOutput`, RoomIO's own audio output with 10 ms frames and a short
          AudioSource queue (`output_queue_ms`). Audio the model sends ahead of real time
          waits in the output's channel instead, where an interruption drops it at once.

`latency.mode: framework` goes back to the framework's own objects and sizes.

The benchmarks' per-frame trace (`latency.trace_file`) is a subclass of the output,
built only while tracing (agents/observability/latency_trace.py).
"""

from __future__ import annotations

from livekit import rtc
from livekit.agents import room_io, utils
from livekit.agents.voice.room_io._output import _ParticipantAudioOutput

from .settings import LatencySettings


# ---- the room side --------------------------------------------------------------------------
class LowLatencyAudioOutput(_ParticipantAudioOutput):
    """RoomIO's audio output with its two sizes as options: the frame it re-chunks the model's
    audio into, and the AudioSource queue. Everything else (publishing, pause, interruption,
    playout tracking, transcript sync) is the framework's own."""

    def __init__(
        self,
        room: rtc.Room,
        *,
        sample_rate: int,
        num_channels: int,
        track_publish_options: rtc.TrackPublishOptions,
        frame_ms: int,
        queue_ms: int,
        track_name: str = "roomio_audio",
    ) -> None:
        super().__init__(
            room,
            sample_rate=sample_rate,
            num_channels=num_channels,
            track_publish_options=track_publish_options,
            track_name=track_name,
        )
        # the base class made a 200 ms source that nothing has used yet: replace it before
        # start() publishes it
        default_source = self._audio_source
        self._audio_source = self._new_source(sample_rate, num_channels, queue_ms)
        default_source._ffi_handle.dispose()
        self._audio_bstream = utils.audio.AudioByteStream(
            sample_rate, num_channels, samples_per_channel=sample_rate * frame_ms // 1000
        )

    def _new_source(self, sample_rate: int, num_channels: int, queue_ms: int) -> rtc.AudioSource:
        return rtc.AudioSource(sample_rate, num_channels, queue_size_ms=queue_ms)


def is_framework(settings: LatencySettings) -> bool:
    return settings.mode == "framework"


def audio_input_options(settings: LatencySettings, *, auto_gain_control: bool) -> room_io.AudioInputOptions:
    if is_framework(settings):
        return room_io.AudioInputOptions(auto_gain_control=auto_gain_control)
    return room_io.AudioInputOptions(
        sample_rate=settings.input_sample_rate,
        frame_size_ms=settings.input_frame_ms,
        auto_gain_control=auto_gain_control,
    )


def needs_own_output(settings: LatencySettings) -> bool:
    """The framework's RoomIO output serves `framework` mode unless frames must be dated."""
    return not is_framework(settings) or bool(settings.trace_file)


def build_audio_output(settings: LatencySettings, room: rtc.Room) -> LowLatencyAudioOutput:
    defaults = room_io.AudioOutputOptions()
    framework = is_framework(settings)
    output_class = LowLatencyAudioOutput
    if settings.trace_file:  # the benchmarks' dated frames, only while tracing
        from .observability.latency_trace import TracedAudioOutput as output_class
    return output_class(
        room,
        sample_rate=defaults.sample_rate,
        num_channels=defaults.num_channels,
        track_publish_options=defaults.track_publish_options,
        frame_ms=50 if framework else settings.output_frame_ms,
        queue_ms=200 if framework else settings.output_queue_ms,
    )
