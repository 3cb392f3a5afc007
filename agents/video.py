"""Video to the model: which of the person's tracks, and how often a frame goes.

- Source: one rule, `pick_video`, for calls and meetings: whoever shares their screen,
  else the current speaker's camera (`video.prefer: camera` turns that around); in a
  one-to-one call, the person's screen over their camera. Left alone, the framework's
  RoomIO takes whichever track of its one linked person came last; `VideoSource` pins its
  video stream to the chosen track and person.
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

from .participants import people
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


SCREEN, CAMERA = rtc.TrackSource.SOURCE_SCREENSHARE, rtc.TrackSource.SOURCE_CAMERA


def pick_video(
    tracks: dict[str, dict[int, str]], people: list[str], speaker: str | None, prefer: str
) -> tuple[str | None, str | None]:
    """The one rule for what the model sees: (identity, track sid) from `tracks`
    (identity -> {source: sid} of the video people publish, in `people` order).

    A shared screen is for everyone (the speaker's own first, then anyone's); a camera
    only shows its owner, so only the current speaker's counts. `prefer` orders the two:
    screen_share (default) = whoever shares their screen, else the speaker's camera. A
    one-to-one call is the case of one person: their screen, else their camera."""
    if speaker not in people:
        speaker = people[0] if people else None
    if speaker is None:
        return None, None
    order = (SCREEN, CAMERA) if prefer == "screen_share" else (CAMERA, SCREEN)
    for source in order:
        owners = [speaker] + [p for p in people if p != speaker] if source == SCREEN else [speaker]
        for who in owners:
            if (sid := tracks.get(who, {}).get(source)) is not None:
                return who, sid
    return speaker, None


class VideoSource:
    """Points RoomIO's video input at the track `pick_video` chooses, as tracks come and go
    and as the meeting (agents/meeting.py, through `follow`) hands the floor around.
    Left alone, the framework would take whichever track of its linked person came last."""

    _EVENTS = ("track_subscribed", "track_unsubscribed", "track_unpublished", "participant_disconnected")

    def __init__(self, session: AgentSession, room: rtc.Room, prefer: str) -> None:
        self._session, self._room, self._prefer = session, room, prefer
        self._meeting = False
        self._speaker: str | None = None
        self.chosen: tuple[str | None, str | None] = (None, None)
        for ev in self._EVENTS:
            room.on(ev, self._update)
        self._update()

    def close(self) -> None:
        for ev in self._EVENTS:
            self._room.off(ev, self._update)

    def follow(self, speaker: str | None, *, meeting: bool) -> None:
        """meeting=False: one-to-one with RoomIO's linked person; True: everyone in the
        room counts and `speaker` (who holds or last held the floor) is the speaker."""
        self._meeting, self._speaker = meeting, speaker
        self._update()

    def _update(self, *event) -> None:
        room_io = self._session.room_io
        stream = room_io.video_input if room_io else None
        if stream is None or not hasattr(stream, "set_track_sid"):
            return
        gone = next((a for a in event if isinstance(a, rtc.RemoteTrackPublication)), None)
        if self._meeting:
            present = people(self._room)  # who left is gone from the room already
            speaker = self._speaker
        else:
            linked = room_io.linked_participant
            present = [linked] if linked is not None else []
            speaker = linked.identity if linked is not None else None
        tracks: dict[str, dict[int, str]] = {}
        for p in present:
            for pub in p.track_publications.values():
                if pub.kind == rtc.TrackKind.KIND_VIDEO and pub.track is not None and pub is not gone:
                    tracks.setdefault(p.identity, {}).setdefault(pub.source, pub.sid)
        chosen = pick_video(tracks, [p.identity for p in present], speaker, self._prefer)
        if chosen == self.chosen:
            return
        self.chosen = chosen
        logger.debug("video source", extra={"participant": chosen[0], "track": chosen[1]})
        # the framework's own switches; the track first, so no other track is opened between
        stream.set_track_sid(chosen[1])
        if self._meeting:  # one-to-one, RoomIO links the person itself
            stream.set_participant(chosen[0])


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


def attach(session: AgentSession, room: rtc.Room, settings: VideoSettings) -> VideoSource | None:
    """After session.start(): watch the person's speech for the sampler, and choose the
    video the model sees (a meeting steers it through VideoSource.follow)."""
    if not settings.enabled:
        return None
    speech_activity(session)
    return VideoSource(session, room, settings.prefer)
