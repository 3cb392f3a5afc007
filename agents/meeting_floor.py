"""The meeting's microphone: everyone's audio into one `io.AudioInput`, one person at a time.

Gemini Live takes one audio stream per session and cannot tell voices apart, so the agent
hands the floor to one person at a time (like a chair): whoever starts speaking while
nobody else is takes it and their audio goes to the model live; someone who starts while
another person holds the floor is queued, their speech kept from its onset, and sent as
soon as the agent has answered the one before (`release()`). Whoever starts while the
floor is free takes it at once, even with others queued, so anyone can stop the agent by
talking over it. A short pre-roll kept per person puts the first words (before the local
detector fired) in front of every turn.
Between turns the model gets silence, so its own activity detection closes each turn
and each of its turns belongs to exactly one person.

Only data path here: the meeting (agents/meeting.py) decides when to release the queue,
publishes transcripts and talks to the model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents import io

logger = logging.getLogger("gemini-agent")

ONSET_FRAMES = 3  # 30 ms of sound above the threshold starts a person's speech


@dataclass
class Segment:
    """One person's turn as sent to the model."""

    identity: str
    track_sid: str
    started_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None


class _Voice:
    def __init__(self, identity: str, track_sid: str, stream: rtc.AudioStream, preroll: int) -> None:
        self.identity, self.track_sid, self.stream = identity, track_sid, stream
        self.ring: deque[rtc.AudioFrame] = deque(maxlen=max(preroll, 1))
        self.backlog: list[rtc.AudioFrame] | None = None  # queued behind another speaker
        self.done_speaking = False  # their queued speech has ended
        self.speaking = False
        self.loud = 0
        self.quiet = 0
        self.task: asyncio.Task | None = None


class FloorAudioInput(io.AudioInput):
    def __init__(
        self,
        *,
        sample_rate: int,
        frame_ms: int,
        threshold_dbfs: float,
        preroll_ms: int,
        end_silence_ms: int,
        queue_wait_s: float,
        on_floor: Callable[[Segment], None],
    ) -> None:
        super().__init__(label="MeetingFloor")
        self._rate, self._frame_ms = sample_rate, frame_ms
        self._spf = sample_rate * frame_ms // 1000
        # int16 RMS above which a frame counts as sound
        self._threshold = 32768 * 10 ** (threshold_dbfs / 20)
        self._preroll = max(preroll_ms // frame_ms, 0)
        self._end_frames = max(math.ceil(end_silence_ms / frame_ms), 1)
        self._queue_wait_s = queue_wait_s
        self._on_floor = on_floor
        self._voices: dict[str, _Voice] = {}
        self._holder: _Voice | None = None
        self._segment: Segment | None = None
        self._queue: deque[_Voice] = deque()
        self._awaiting_since: float | None = None  # a turn ended; the model's answer is due
        self._debt = 0  # frames sent ahead of real time (pre-roll, backlogs)
        self._out: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()
        self._silence = rtc.AudioFrame(b"\0\0" * self._spf, sample_rate, 1, self._spf)
        self._attached = True
        self._closed = False

    # ---- who is in --------------------------------------------------------------------
    @property
    def identities(self) -> list[str]:
        return list(self._voices)

    @property
    def holder(self) -> str | None:
        return self._holder.identity if self._holder else None

    def add(self, participant: rtc.RemoteParticipant, track: rtc.Track, track_sid: str) -> None:
        if self._closed:
            return
        old = self._voices.get(participant.identity)
        if old is not None and old.track_sid == track_sid:
            return
        if old is not None:
            self.remove(participant.identity)
        stream = rtc.AudioStream.from_track(
            track=track, sample_rate=self._rate, num_channels=1, frame_size_ms=self._frame_ms
        )
        v = _Voice(participant.identity, track_sid, stream, self._preroll)
        self._voices[v.identity] = v
        v.task = asyncio.create_task(self._read(v), name=f"meeting-voice-{v.identity}")

    def remove(self, identity: str) -> None:
        v = self._voices.pop(identity, None)
        if v is None:
            return
        if v in self._queue:
            self._queue.remove(v)
            if v.backlog:  # what they said before leaving is still a turn
                self._queue.appendleft(v)
                v.done_speaking = True
        if v is self._holder:
            self._end_holder()
        if v.task is not None:
            v.task.cancel()
        asyncio.get_running_loop().create_task(v.stream.aclose())

    async def aclose(self) -> None:
        self._closed = True
        for identity in list(self._voices):
            self.remove(identity)

    # ---- the model has answered ------------------------------------------------------
    def release(self) -> None:
        """The model answered (or declined) the last turn: the next queued person speaks."""
        self._awaiting_since = None
        if self._holder is not None:
            return
        while self._queue:
            v = self._queue.popleft()
            backlog, v.backlog = v.backlog or [], None
            if not backlog:
                continue
            self._take_floor(v, backlog)
            if v.done_speaking:
                v.done_speaking = False
                self._end_holder()
            return

    # ---- io.AudioInput ------------------------------------------------------------------
    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed and self._out.empty():
            raise StopAsyncIteration
        return await self._out.get()

    def on_attached(self) -> None:
        self._attached = True

    def on_detached(self) -> None:
        self._attached = False

    # ---- per person ---------------------------------------------------------------------
    async def _read(self, v: _Voice) -> None:
        try:
            async for ev in v.stream:
                self._on_frame(v, ev.frame)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("meeting: reading %s's microphone failed", v.identity)

    def _on_frame(self, v: _Voice, frame: rtc.AudioFrame) -> None:
        samples = np.frombuffer(frame.data, dtype=np.int16)
        loud = bool(len(samples)) and float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) >= self._threshold
        started = ended = False
        if loud:
            v.loud += 1
            v.quiet = 0
            if not v.speaking and v.loud >= ONSET_FRAMES:
                v.speaking = started = True
        else:
            v.loud = 0
            v.quiet += 1
            if v.speaking and v.quiet >= self._end_frames:
                v.speaking = False
                ended = True

        if v is self._holder:
            self._emit(frame)
            if ended:
                self._end_holder()
        elif v.backlog is not None:
            v.backlog.append(frame)
            if ended:
                v.done_speaking = True
        else:
            v.ring.append(frame)
            if started:
                # a free floor is taken at once, even with others queued for their turn:
                # anyone can stop the agent by talking over it
                if self._holder is None:
                    preroll = list(v.ring)
                    v.ring.clear()
                    self._take_floor(v, preroll)
                else:
                    v.backlog = list(v.ring)
                    v.ring.clear()
                    v.done_speaking = False
                    self._queue.append(v)
                    logger.info("meeting: %s queued behind %s", v.identity, self.holder)

        if self._holder is None and v is self._clock():
            self._tick()

    def _clock(self) -> _Voice | None:
        """Between turns the first person's frame arrivals pace the silence sent to the model."""
        return next(iter(self._voices.values()), None)

    def _tick(self) -> None:
        if self._awaiting_since is not None:
            if time.monotonic() - self._awaiting_since >= self._queue_wait_s:
                logger.info("meeting: no answer within %.1f s, next speaker", self._queue_wait_s)
                self.release()
                if self._holder is not None:
                    return
            self._emit(self._silence)  # the model needs silence to end the turn
        elif self._debt > 0 and not self._queue:
            self._debt -= 1  # catch up with real time while nobody speaks
        else:
            self._emit(self._silence)

    def _take_floor(self, v: _Voice, frames: list[rtc.AudioFrame]) -> None:
        self._holder = v
        self._segment = Segment(v.identity, v.track_sid)
        self._on_floor(self._segment)
        for f in frames:
            self._emit(f)
        self._debt += max(len(frames) - 1, 0)

    def _end_holder(self) -> None:
        seg, self._segment, self._holder = self._segment, None, None
        self._awaiting_since = time.monotonic()
        if seg is not None:
            seg.ended_at = time.monotonic()

    def _emit(self, frame: rtc.AudioFrame) -> None:
        if self._attached and not self._closed:
            self._out.put_nowait(frame)
