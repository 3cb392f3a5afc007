"""The audio path between the room and Gemini, tuned for latency, and its measurement hooks.

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

Measurement (`latency.trace_file`, off by default): timestamped JSON lines, one per audio
frame at each hop, for the benchmarks in bench/. Times are time.monotonic()
(CLOCK_MONOTONIC, the clock the offline servers and time.perf_counter() use on Linux).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import room_io, utils
from livekit.agents.voice.room_io._output import _ParticipantAudioOutput

from .settings import LatencySettings


# ---- measurement hooks --------------------------------------------------------------------
class LatencyTrace:
    """Appends `{"ev": ..., "t": monotonic, ...}` lines to a file; cheap, off by default."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def event(self, ev: str, t: float | None = None, **fields: Any) -> None:
        now = time.monotonic()
        line = json.dumps({"ev": ev, "t": now if t is None else t, **fields}, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            if now - self._last_flush > 0.25:
                self._file.flush()
                self._last_flush = now

    def close(self) -> None:
        with self._lock:
            self._file.close()


_trace: LatencyTrace | None = None


def peak(pcm) -> int:
    """Peak level of 16-bit PCM (bytes or an int16 memoryview), for the trace."""
    a = np.frombuffer(pcm, dtype=np.int16)
    return int(np.abs(a.astype(np.int32)).max()) if len(a) else 0


def trace() -> LatencyTrace | None:
    return _trace


def open_trace(settings: LatencySettings, *, room: str) -> LatencyTrace | None:
    """One trace file per job process and room, next to `latency.trace_file`."""
    global _trace
    if not settings.trace_file:
        return None
    base = settings.trace_file
    path = f"{base}.{os.getpid()}.{room}.jsonl"
    _trace = LatencyTrace(path)
    _trace.event("open", room=room, mode=settings.mode)
    return _trace


def close_trace() -> None:
    global _trace
    if _trace is not None:
        _trace.close()
        _trace = None


class _TracedAudioSource(rtc.AudioSource):
    """Dates each frame's first sample leaving the sender: captured now, it plays after the
    audio already queued ahead of it (the native queue drains 10 ms every 10 ms)."""

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        tr = _trace
        if tr is not None:
            tr.event("play", q=self.queued_duration, dur=frame.duration, lvl=peak(frame.data))
        await super().capture_frame(frame)


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
        traced: bool = False,
        track_name: str = "roomio_audio",
    ) -> None:
        super().__init__(
            room,
            sample_rate=sample_rate,
            num_channels=num_channels,
            track_publish_options=track_publish_options,
            track_name=track_name,
        )
        source_cls = _TracedAudioSource if traced else rtc.AudioSource
        # the base class made a 200 ms source that nothing has used yet: replace it before
        # start() publishes it
        default_source = self._audio_source
        self._audio_source = source_cls(sample_rate, num_channels, queue_size_ms=queue_ms)
        default_source._ffi_handle.dispose()
        self._audio_bstream = utils.audio.AudioByteStream(
            sample_rate, num_channels, samples_per_channel=sample_rate * frame_ms // 1000
        )

    def clear_buffer(self) -> None:
        if (tr := _trace) is not None:
            tr.event("clear")
        super().clear_buffer()


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
    return LowLatencyAudioOutput(
        room,
        sample_rate=defaults.sample_rate,
        num_channels=defaults.num_channels,
        track_publish_options=defaults.track_publish_options,
        frame_ms=50 if framework else settings.output_frame_ms,
        queue_ms=200 if framework else settings.output_queue_ms,
        traced=bool(settings.trace_file),
    )
