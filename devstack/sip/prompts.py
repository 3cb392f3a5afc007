"""What the gateway itself plays to a caller, as livekit-sip does while it asks for a
dispatch rule's PIN. livekit-sip plays recorded voice prompts; the stand-in plays tones
a test can tell apart by frequency: ENTER_PIN (two short 440 Hz beeps), WRONG_PIN (a
long 300 Hz tone), ROOM_JOIN (one short 660 Hz beep)."""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np

from .rtp import RATE, SAMPLES


def _tone(hz: float, seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _gap(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), np.int16)


ENTER_PIN = np.concatenate([_tone(440, 0.25), _gap(0.15), _tone(440, 0.25)])
WRONG_PIN = _tone(300, 0.8)
ROOM_JOIN = _tone(660, 0.2)


class PromptPlayer:
    """An RTP session's `pull` while the gateway speaks to the caller: 20 ms at a time of
    what was queued, silence when nothing is."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self._done = asyncio.Event()
        self._done.set()

    def play(self, pcm: np.ndarray) -> None:
        self._chunks.extend(pcm[i:i + SAMPLES] for i in range(0, len(pcm), SAMPLES))
        self._done.clear()

    async def played(self) -> None:
        await self._done.wait()

    def pull(self) -> np.ndarray:
        if not self._chunks:
            self._done.set()
            return np.zeros(SAMPLES, np.int16)
        chunk = self._chunks.popleft()
        if len(chunk) < SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(SAMPLES - len(chunk), np.int16)])
        return chunk
