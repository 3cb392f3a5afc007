"""Noise suppression on the caller's audio before it reaches the model, per kind of caller.

`webrtc` is WebRTC's noise suppressor, the one inside livekit-rtc's AudioProcessingModule
(native code, 10 ms frames, no model to download, runs on any host: nothing to do with
LiveKit Cloud). `livekit_nc` / `livekit_bvc` / `livekit_bvc_telephony` hand the stream to
LiveKit Cloud's own noise cancellation (livekit-plugins-noise-cancellation; only works
against LiveKit Cloud). Either way the framework's RoomIO runs it: it goes in as
`AudioInputOptions.noise_cancellation`, a selector the framework calls for each caller's
track, so the audio path stays the framework's (AudioStream applies it, then gain control).

Kinds of caller: `phone` (a SIP participant), `browser` (a microphone published with the
client's own capture processing: echo cancellation / noise suppression / gain control
flags, as browsers and the mobile SDKs set them), `sdk` (anything else, e.g. a server-side
SDK publishing raw audio).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import replace
from typing import Literal

from livekit import rtc
from livekit.agents import room_io
from livekit.agents.voice.room_io.types import NoiseCancellationParams
from livekit.rtc._proto.track_pb2 import AudioTrackFeature

logger = logging.getLogger("gemini-agent")

Suppressor = Literal["off", "webrtc", "livekit_nc", "livekit_bvc", "livekit_bvc_telephony"]
CallerKind = Literal["browser", "phone", "sdk"]
CLOUD_PLUGIN = "livekit.plugins.noise_cancellation"
CLOUD_PACKAGE = "livekit-plugins-noise-cancellation"

# what a client's own capture pipeline announces on its microphone track
_CAPTURE_PROCESSING = {
    AudioTrackFeature.TF_ECHO_CANCELLATION,
    AudioTrackFeature.TF_NOISE_SUPPRESSION,
    AudioTrackFeature.TF_AUTO_GAIN_CONTROL,
}


class WebRTCNoiseSuppressor(rtc.FrameProcessor[rtc.AudioFrame]):
    """WebRTC's noise suppressor as a frame processor (one per caller's stream: it keeps
    the noise estimate of that stream). Frames of any multiple of 10 ms are processed in
    place, 10 ms at a time, as the suppressor requires."""

    def __init__(self) -> None:
        self._apm: rtc.AudioProcessingModule | None = rtc.AudioProcessingModule(noise_suppression=True)
        self._enabled = True

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = value

    def _process(self, frame: rtc.AudioFrame) -> rtc.AudioFrame:
        apm = self._apm
        if apm is None:
            return frame
        step = frame.sample_rate // 100  # samples per channel in 10 ms
        if frame.samples_per_channel == step:
            apm.process_stream(frame)  # in place
            return frame
        if frame.samples_per_channel % step:
            return frame  # not whole 10 ms pieces: leave it as it is rather than garble it
        data = bytearray(frame.data.cast("B"))
        size = step * frame.num_channels * 2
        for start in range(0, len(data), size):
            piece = rtc.AudioFrame(data[start : start + size], frame.sample_rate, frame.num_channels, step)
            apm.process_stream(piece)
            data[start : start + size] = piece.data.cast("B")
        return rtc.AudioFrame(data, frame.sample_rate, frame.num_channels, frame.samples_per_channel)

    def _close(self) -> None:
        apm, self._apm = self._apm, None
        if apm is not None:
            apm._ffi_handle.dispose()


def caller_kind(participant: rtc.Participant, track: rtc.Track | None = None) -> CallerKind:
    if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
        return "phone"
    pub = participant.track_publications.get(track.sid) if track is not None else None
    if pub is not None and _CAPTURE_PROCESSING & set(pub.audio_features):
        return "browser"
    return "sdk"


def cloud_available() -> bool:
    return importlib.util.find_spec(CLOUD_PLUGIN) is not None


def build(kind: Suppressor) -> rtc.NoiseCancellationOptions | rtc.FrameProcessor[rtc.AudioFrame] | None:
    if kind == "off":
        return None
    if kind == "webrtc":
        return WebRTCNoiseSuppressor()
    cloud = importlib.import_module(CLOUD_PLUGIN)  # settings checked it is installed
    return {"livekit_nc": cloud.NC, "livekit_bvc": cloud.BVC,
            "livekit_bvc_telephony": cloud.BVCTelephony}[kind]()


def selector(choice: dict[CallerKind, Suppressor]):
    """The framework's NoiseCancellationSelector: the suppressor for this caller's kind."""

    def select(params: NoiseCancellationParams):
        kind = caller_kind(params.participant, params.track)
        suppressor = choice.get(kind, "off")
        logger.debug("noise suppression", extra={"caller": kind, "suppressor": suppressor})
        return build(suppressor)

    return select


def with_noise_suppression(options: room_io.AudioInputOptions, settings) -> room_io.AudioInputOptions:
    """`options` with the `noise:` settings' selector (unchanged when every kind is off).
    Gain control stays as the options set it (the framework wants it explicit with a
    selector), and runs after suppression."""
    choice = {"browser": settings.browser, "phone": settings.phone, "sdk": settings.sdk}
    if all(v == "off" for v in choice.values()):
        return options
    return replace(options, noise_cancellation=selector(choice))
