"""The LiveKit side of a phone call: a participant of kind SIP joined through the real rtc
SDK, as livekit-sip joins it. The phone's audio becomes its microphone track; the room's
audio (the agent) is mixed down to 8 kHz for the phone; DTMF goes both ways as SipDTMF."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections import deque
from typing import Callable

import numpy as np
from livekit import api, rtc

from .rtp import RATE, SAMPLES, digit_code

logger = logging.getLogger("devstack.sip.room")


def sip_token(api_key: str, api_secret: str, *, room: str, identity: str, name: str,
              attributes: dict[str, str], room_config: api.RoomConfiguration | None) -> str:
    """What livekit-server mints for livekit-sip: kind SIP, 24 h, the rule's room config."""
    tok = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name(name)
        .with_kind("sip")
        .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                                     can_publish_data=True, can_update_own_metadata=True))
        .with_attributes(attributes)
        .with_ttl(datetime.timedelta(hours=24))
    )
    if room_config is not None and room_config.ByteSize():
        tok = tok.with_room_config(room_config)
    return tok.to_jwt()


class _TrackBuffer:
    """8 kHz samples of one remote track, waiting to be sent to the phone."""

    PREFILL = 2 * SAMPLES  # start (or restart after running dry) with 40 ms queued
    LIMIT = RATE  # never more than 1 s behind
    # Audio that arrived in a burst (the track's first frames, a late packet's catch-up)
    # would otherwise stay queued for the rest of the call, since both ends run in real
    # time: above this, silence is dropped once it has lasted PAUSE (between turns, never
    # inside a sentence's pauses), as a phone's adaptive jitter buffer does.
    TARGET = 4 * SAMPLES
    QUIET = 100  # int16 peak below which a chunk is silence
    PAUSE = RATE * 3 // 10

    def __init__(self) -> None:
        self.chunks: deque[np.ndarray] = deque()
        self.size = 0
        self.primed = False
        self.quiet = 0  # samples of silence received in a row

    def push(self, pcm: np.ndarray) -> None:
        self.quiet = self.quiet + len(pcm) if int(np.abs(pcm).max(initial=0)) < self.QUIET else 0
        if self.size > self.TARGET and self.quiet > self.PAUSE:
            return
        self.chunks.append(pcm)
        self.size += len(pcm)
        while self.size > self.LIMIT:
            self.size -= len(self.chunks.popleft())

    def take(self, n: int) -> np.ndarray | None:
        if not self.primed:
            if self.size < self.PREFILL:
                return None
            self.primed = True
        if self.size < n:
            self.primed = False
        out = np.zeros(n, np.int32)
        filled = 0
        while filled < n and self.chunks:
            c = self.chunks[0]
            k = min(n - filled, len(c))
            out[filled:filled + k] = c[:k]
            filled += k
            if k == len(c):
                self.chunks.popleft()
            else:
                self.chunks[0] = c[k:]
        self.size -= filled
        return out


class RoomLeg:
    def __init__(self, *, on_dtmf: Callable[[str], None], on_gone: Callable[[str], None]) -> None:
        self.room = rtc.Room()
        self.on_dtmf = on_dtmf
        self.on_gone = on_gone
        # the phone's 8 kHz goes in as it is, and the room's audio comes out at 8 kHz in 20 ms
        # frames (one per RTP packet): the SDK resamples natively, not through Python
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
        self._inbox: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._buffers: dict[str, _TrackBuffer] = {}
        self._tasks: set[asyncio.Task] = set()
        self._left = False
        self._quiet_in = 0  # samples of silence from the phone in a row

    async def join(self, url: str, token: str) -> None:
        self.room.on("track_subscribed", self._on_track)
        self.room.on("track_unsubscribed", lambda track, pub, p: self._buffers.pop(track.sid, None))
        self.room.on("sip_dtmf_received", self._on_dtmf)
        self.room.on("disconnected", self._on_disconnected)
        await self.room.connect(url, token)
        track = rtc.LocalAudioTrack.create_audio_track(self.room.local_participant.identity, self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        self._spawn(self._pump_phone_audio())

    @property
    def participant_sid(self) -> str:
        return self.room.local_participant.sid

    async def set_status(self, status: str) -> None:
        if self._left or not self.room.isconnected():
            return
        with contextlib.suppress(Exception):
            await self.room.local_participant.set_attributes({"sip.callStatus": status})

    async def leave(self) -> None:
        if self._left:
            return
        self._left = True
        self._inbox.put_nowait(None)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.room.disconnect()

    # --------------------------------------------------------- phone -> room --
    def phone_audio(self, pcm: np.ndarray) -> None:
        if not self._left:
            self._inbox.put_nowait(pcm)

    async def _pump_phone_audio(self) -> None:
        while (pcm := await self._inbox.get()) is not None:
            # RTP that piled up (while the room was joined, or this loop held up) would stay
            # a standing delay for the rest of the call: above 60 ms, silence is dropped once
            # it has lasted 0.3 s (between turns, never inside a sentence)
            silent = int(np.abs(pcm.astype(np.int32)).max(initial=0)) < _TrackBuffer.QUIET
            self._quiet_in = self._quiet_in + len(pcm) if silent else 0
            behind = self._inbox.qsize() * SAMPLES / RATE + self.source.queued_duration
            if behind > 0.06 and self._quiet_in > _TrackBuffer.PAUSE:
                continue
            await self.source.capture_frame(rtc.AudioFrame(pcm.astype(np.int16).tobytes(), RATE, 1, len(pcm)))

    async def phone_dtmf(self, digit: str) -> None:
        """A key pressed on the phone: a SipDTMF data packet from this participant."""
        with contextlib.suppress(Exception):
            await self.room.local_participant.publish_dtmf(code=digit_code(digit), digit=digit)

    # --------------------------------------------------------- room -> phone --
    def pull(self) -> np.ndarray:
        """The next 20 ms of the room's audio at 8 kHz, mixed."""
        mix = np.zeros(SAMPLES, np.int32)
        for buf in list(self._buffers.values()):
            part = buf.take(SAMPLES)
            if part is not None:
                mix += part
        return np.clip(mix, -32768, 32767).astype(np.int16)

    def _on_track(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            buf = self._buffers[track.sid] = _TrackBuffer()
            self._spawn(self._listen(track, buf))

    async def _listen(self, track: rtc.Track, buf: _TrackBuffer) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=20):
            buf.push(np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.int32))

    def _on_dtmf(self, ev: rtc.SipDTMF) -> None:
        if ev.digit:
            self.on_dtmf(ev.digit)

    def _on_disconnected(self, reason=None) -> None:
        if not self._left:
            self.on_gone(str(reason))

    def _spawn(self, coro) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
