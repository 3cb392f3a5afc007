"""Video to the model: which of the person's tracks, and how often a frame goes.

- Source: when the person shares both camera and screen, the framework's RoomIO takes
  whichever track came last. `PreferredVideoSource` pins its video stream to the
  preferred one (`video.prefer`, screen share by default) and falls back to the other.
- Rate: the framework's VoiceActivityVideoSampler sends `video.fps` while the person
  speaks and `video.silent_fps` otherwise. It reads "speaking" from the session's user
  state, which with Gemini's own turn detection only changes around the model's replies
  (Gemini reports no speech start), so `SpeechPacedVideoSampler` feeds it the person's
  speech as heard on their own audio (`SpeechActivity`, a pass-through on the session's
  audio input that watches the level, with a noise floor that follows the room).
- Resolution: `model_options()` gives the plugin Gemini's `media_resolution`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from google.genai import types
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import io
from livekit.agents.voice.agent_session import VoiceActivityVideoSampler

from .settings import VideoSettings

logger = logging.getLogger("gemini-agent")


class SpeechActivity(io.AudioInput):
    """Passes the caller's audio on unchanged and keeps `speaking` up to date: a frame
    louder than the room's noise floor by `margin_db` (and than `floor_db`) is speech, and
    speech lasts `hangover_s` past its last loud frame (the gaps between words)."""

    def __init__(self, source: io.AudioInput, *, margin_db: float = 9.0, floor_db: float = -50.0,
                 hangover_s: float = 0.5) -> None:
        super().__init__(label="SpeechActivity", source=source)
        self.margin_db = margin_db
        self.floor_db = floor_db
        self.hangover_s = hangover_s
        self.noise_db = 0.0  # the room's level without speech: starts high, falls to it at once
        self._speech_left_s = 0.0
        self.last_voice_at = 0.0  # time.monotonic() of the last frame heard as speech

    @property
    def speaking(self) -> bool:
        return self._speech_left_s > 0

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await super().__anext__()
        self._observe(frame)
        return frame

    def _observe(self, frame: rtc.AudioFrame) -> None:
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if not len(samples):
            return
        rms = math.sqrt(float(np.mean(samples.astype(np.float32) ** 2))) / 32768.0
        level = 20 * math.log10(rms + 1e-9)
        dur = frame.samples_per_channel / frame.sample_rate
        # the floor drops to any quieter frame at once and rises 3 dB a second, so
        # steady noise becomes the floor within seconds while speech never does
        self.noise_db = level if level < self.noise_db else self.noise_db + 3.0 * dur
        if level > max(self.floor_db, self.noise_db + self.margin_db):
            self._speech_left_s = self.hangover_s
            self.last_voice_at = time.monotonic()
        else:
            self._speech_left_s = max(0.0, self._speech_left_s - dur)


@dataclass
class _UserState:
    user_state: str  # all VoiceActivityVideoSampler reads of the session


class SpeechPacedVideoSampler(VoiceActivityVideoSampler):
    """The framework's sampler, told the person speaks when their audio says so (the
    session's audio input chain holds a SpeechActivity once `attach()` has run)."""

    def __call__(self, frame: rtc.VideoFrame, session: AgentSession) -> bool:
        activity = session.input.audio
        while activity is not None and not isinstance(activity, SpeechActivity):
            activity = activity.source
        speaking = activity is not None and activity.speaking
        return super().__call__(frame, _UserState("speaking" if speaking else "listening"))  # type: ignore[arg-type]


def build_video_sampler(settings: VideoSettings) -> SpeechPacedVideoSampler | None:
    if not settings.enabled:
        return None
    return SpeechPacedVideoSampler(speaking_fps=settings.fps, silent_fps=settings.silent_fps)


def model_options(settings: VideoSettings) -> dict:
    """RealtimeModel keyword arguments for video (none when video is off or left to Gemini)."""
    if not settings.enabled or settings.media_resolution is None:
        return {}
    return {"media_resolution": types.MediaResolution[f"MEDIA_RESOLUTION_{settings.media_resolution.upper()}"]}


class PreferredVideoSource:
    """Keeps RoomIO's video input on the person's preferred track when they publish both."""

    def __init__(self, session: AgentSession, room: rtc.Room, prefer: str) -> None:
        self._session = session
        self._room = room
        screen, camera = rtc.TrackSource.SOURCE_SCREENSHARE, rtc.TrackSource.SOURCE_CAMERA
        self._order = (screen, camera) if prefer == "screen_share" else (camera, screen)
        self._pinned: str | None = None
        for ev in ("track_subscribed", "track_unsubscribed", "track_unpublished", "participant_disconnected"):
            room.on(ev, self._update)
        self._update()

    def close(self) -> None:
        for ev in ("track_subscribed", "track_unsubscribed", "track_unpublished", "participant_disconnected"):
            self._room.off(ev, self._update)

    def _update(self, *event) -> None:
        stream = self._session.room_io.video_input if self._session.room_io else None
        if stream is None or not hasattr(stream, "set_track_sid"):
            return
        person = self._session.room_io.linked_participant
        gone = next((a for a in event if isinstance(a, rtc.RemoteTrackPublication)), None)
        available = {}
        if person is not None:
            for pub in person.track_publications.values():
                if pub.kind == rtc.TrackKind.KIND_VIDEO and pub.track is not None and pub is not gone:
                    available.setdefault(pub.source, pub.sid)
        chosen = next((available[s] for s in self._order if s in available), None)
        if chosen != self._pinned:
            self._pinned = chosen
            logger.debug("video source", extra={"track": chosen})
            # the framework's own switch: only this publication feeds the model
            stream.set_track_sid(chosen)


def speech_activity(session: AgentSession, *, create: bool = True) -> SpeechActivity | None:
    """The SpeechActivity in the session's audio input chain, put in front of it if none is
    there yet and `create` (the video sampler and the turn-latency metric share one; a
    meeting puts its own in front of the floor, agents/meeting.py)."""
    audio = session.input.audio
    while audio is not None and not isinstance(audio, SpeechActivity):
        audio = audio.source
    if audio is None and create and session.input.audio is not None:
        audio = session.input.audio = SpeechActivity(session.input.audio)
    return audio


def attach(session: AgentSession, room: rtc.Room, settings: VideoSettings) -> PreferredVideoSource | None:
    """After session.start(): watch the person's speech for the sampler, and follow the
    preferred video source."""
    if not settings.enabled:
        return None
    speech_activity(session)
    return PreferredVideoSource(session, room, settings.prefer)
