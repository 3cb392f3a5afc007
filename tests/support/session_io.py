"""A microphone and a speaker for an AgentSession without a room.

They implement the framework's own I/O interfaces (`voice.io.AudioInput` / `AudioOutput`)
the way a device does: the microphone produces a 10 ms frame every 10 ms (silence unless
the test is "speaking"), and the speaker plays captured audio out in real time, reporting
playback start / finish / interruption like RoomIO's audio output does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents.voice import io


class Microphone(io.AudioInput):
    def __init__(self, sample_rate: int = 48000) -> None:
        super().__init__(label="test-microphone")
        self.sample_rate = sample_rate
        self._spf = sample_rate // 100
        self._pending = np.zeros(0, np.int16)
        self._next_at: float | None = None
        self._spoken = asyncio.Event()

    def say(self, pcm: np.ndarray) -> None:
        """Queue samples (at this microphone's rate) to be spoken from the next frame on."""
        self._pending = np.concatenate([self._pending, pcm.astype(np.int16)])
        self._spoken.clear()

    async def wait_spoken(self) -> float:
        """Wait until everything queued has been sent; return that moment (perf_counter)."""
        await self._spoken.wait()
        return time.perf_counter()

    async def __anext__(self) -> rtc.AudioFrame:
        now = time.perf_counter()
        if self._next_at is None:
            self._next_at = now
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
        self._next_at += 0.01
        chunk = self._pending[: self._spf]
        self._pending = self._pending[self._spf :]
        if len(chunk) < self._spf:
            chunk = np.concatenate([chunk, np.zeros(self._spf - len(chunk), np.int16)])
            if not len(self._pending):
                self._spoken.set()
        return rtc.AudioFrame(chunk.tobytes(), self.sample_rate, 1, self._spf)


@dataclass
class Segment:
    """One agent utterance as it was played: frames with their play-out times."""

    started_at: float
    frames: list[rtc.AudioFrame] = field(default_factory=list)
    played_s: float = 0.0
    ended_at: float | None = None
    interrupted: bool = False

    def pcm(self) -> tuple[np.ndarray, int]:
        from .audio import frames_to_pcm

        return frames_to_pcm(self.frames)


_FLUSH = object()


class Speaker(io.AudioOutput):
    def __init__(self, sample_rate: int = 24000) -> None:
        super().__init__(
            label="test-speaker",
            capabilities=io.AudioOutputCapabilities(pause=False),
            sample_rate=sample_rate,
        )
        self.segments: list[Segment] = []
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._current: Segment | None = None
        self._player = asyncio.get_event_loop().create_task(self._play())
        self.segment_done = asyncio.Condition()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._queue.put_nowait(frame)

    def flush(self) -> None:
        super().flush()
        self._queue.put_nowait(_FLUSH)

    def clear_buffer(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        if self._current is not None:
            self._finish(interrupted=True)
        # the framework may still flush the cut segment; it has been reported already
        self._queue.put_nowait(_FLUSH)

    def _finish(self, *, interrupted: bool) -> None:
        seg, self._current = self._current, None
        assert seg is not None
        seg.ended_at = time.perf_counter()
        seg.interrupted = interrupted
        self.on_playback_finished(playback_position=seg.played_s, interrupted=interrupted)
        asyncio.get_event_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.segment_done:
            self.segment_done.notify_all()

    async def _play(self) -> None:
        next_at = 0.0
        while True:
            item = await self._queue.get()
            if item is _FLUSH:
                if self._current is not None:
                    self._finish(interrupted=False)
                continue
            assert isinstance(item, rtc.AudioFrame)
            now = time.perf_counter()
            if self._current is None:
                self._current = Segment(started_at=now)
                self.segments.append(self._current)
                next_at = now
                self.on_playback_started(created_at=time.time())
            self._current.frames.append(item)
            self._current.played_s += item.duration
            next_at += item.duration
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def wait_for_segments(self, n: int, timeout: float = 20.0) -> list[Segment]:
        """Wait until `n` utterances have finished playing (or were interrupted)."""

        async def done() -> None:
            async with self.segment_done:
                await self.segment_done.wait_for(
                    lambda: sum(s.ended_at is not None for s in self.segments) >= n
                )

        await asyncio.wait_for(done(), timeout)
        return [s for s in self.segments if s.ended_at is not None][:n]

    async def aclose(self) -> None:
        self._player.cancel()
