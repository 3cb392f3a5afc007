"""A person in a LiveKit room, as the real SDK sees it: a microphone that streams in real
time (silence between words, like a real one), the agent's audio as it arrives, the
transcription text streams and the agent's state attribute."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import api, rtc

RATE = 48000
SPF = RATE // 100  # 10 ms frames, as WebRTC sends them


@dataclass
class Transcript:
    identity: str  # who published the stream (the agent publishes both sides)
    track_id: str  # the transcribed track: the caller's microphone for the caller's words
    text: str
    final: bool
    segment_id: str


@dataclass
class ReceivedAudio:
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival, samples)

    def pcm(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        parts = [a for t, a in self.frames if since <= t < until]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def first_loud(self, since: float, threshold: int = 500) -> float | None:
        for t, a in self.frames:
            if t >= since and len(a) and int(np.abs(a).max()) >= threshold:
                return t
        return None

    def last_loud(self, threshold: int = 500) -> float | None:
        for t, a in reversed(self.frames):
            if len(a) and int(np.abs(a).max()) >= threshold:
                return t
        return None


def caller_token(
    lk_api_key: str, lk_api_secret: str, room: str, identity: str, *, agent_name: str | None,
    kind: str | None = None, ttl_s: int = 600,
) -> str:
    token = (
        api.AccessToken(lk_api_key, lk_api_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_ttl(__import__("datetime").timedelta(seconds=ttl_s))
    )
    if kind:
        token = token.with_kind(kind)
    if agent_name is not None:
        token = token.with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent_name)])
        )
    return token.to_jwt()


class Caller:
    # False: receive only the agent's tracks, as a meeting's person who needs nobody else's
    # media (the SFU then forwards and the SDK decodes n tracks, not n * n)
    subscribe_to_people = True

    def __init__(self, identity: str = "caller", **publish_options) -> None:
        self.identity = identity
        self.publish_options = publish_options
        self.room = rtc.Room()
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=50)
        self.heard = ReceivedAudio()
        self.transcripts: list[Transcript] = []
        self.agent_states: list[tuple[float, str]] = []
        self.agent: rtc.RemoteParticipant | None = None
        self._agent_joined = asyncio.Event()
        self._mic_subscribed = asyncio.Event()
        self._left = False
        self._pending = np.zeros(0, np.int16)
        self._spoken = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.speech_end_at: float | None = None

    # ---- connection -------------------------------------------------------------
    async def join(self, url: str, token: str) -> None:
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("participant_connected", self._on_participant)
        self.room.on("local_track_subscribed", lambda track: self._mic_subscribed.set())
        self.room.register_text_stream_handler("lk.transcription", self._on_transcription)
        self.room.on("track_published", self._on_published)
        await self.room.connect(url, token, rtc.RoomOptions(auto_subscribe=self.subscribe_to_people))
        for p in self.room.remote_participants.values():
            self._on_participant(p)
            for pub in p.track_publications.values():
                self._on_published(pub, p)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        pub = await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, **self.publish_options)
        )
        self.mic_track_sid = pub.sid
        self._tasks.append(asyncio.create_task(self._microphone()))

    async def leave(self) -> None:
        if self._left:
            return
        self._left = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.room.disconnect()

    async def wait_agent(self, timeout: float = 30.0) -> rtc.RemoteParticipant:
        """Wait until the agent is in the room and listening to this caller's microphone
        (what a person waits for before talking: the agent's greeting, or its "listening")."""
        await asyncio.wait_for(self._agent_joined.wait(), timeout)
        await asyncio.wait_for(self._mic_subscribed.wait(), timeout)
        assert self.agent is not None
        return self.agent

    def _on_participant(self, p: rtc.RemoteParticipant) -> None:
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and self.agent is None:
            self.agent = p
            self._agent_joined.set()
            self._on_attributes({}, p)

    def _on_published(self, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if not self.subscribe_to_people and p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            pub.set_subscribed(True)

    def _on_attributes(self, changed: dict, p: rtc.Participant) -> None:
        state = p.attributes.get("lk.agent.state")
        if p.identity == getattr(self.agent, "identity", None) and state:
            if not self.agent_states or self.agent_states[-1][1] != state:
                self.agent_states.append((time.perf_counter(), state))

    def _on_track(self, track: rtc.Track, pub, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: rtc.Track) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            self.heard.frames.append(
                (time.perf_counter(), np.frombuffer(ev.frame.data, dtype=np.int16).copy())
            )

    def _on_transcription(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            attrs = reader.info.attributes or {}
            text = await reader.read_all()
            self.transcripts.append(
                Transcript(
                    identity=identity,
                    track_id=attrs.get("lk.transcribed_track_id", ""),
                    text=text,
                    final=attrs.get("lk.transcription_final") == "true",
                    segment_id=attrs.get("lk.segment_id", ""),
                )
            )

        self._tasks.append(asyncio.create_task(read()))

    # ---- the microphone ----------------------------------------------------------
    def say(self, pcm: np.ndarray) -> None:
        """Speak 48 kHz mono samples from the next frame on (queued after anything pending)."""
        self._pending = np.concatenate([self._pending, pcm.astype(np.int16)])
        self._spoken.clear()

    async def wait_spoken(self, timeout: float = 60.0) -> float:
        """Wait for the queued speech to be sent; return when its last frame went out."""
        await asyncio.wait_for(self._spoken.wait(), timeout)
        assert self.speech_end_at is not None
        return self.speech_end_at

    async def _microphone(self) -> None:
        next_at = time.perf_counter()
        silence = np.zeros(SPF, np.int16)
        while True:
            chunk = self._pending[:SPF]
            if len(chunk):
                self._pending = self._pending[SPF:]
                if len(chunk) < SPF:
                    chunk = np.concatenate([chunk, silence[: SPF - len(chunk)]])
                if not len(self._pending):
                    self.speech_end_at = time.perf_counter()
                    self._spoken.set()
            else:
                chunk = silence
            await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, SPF))
            next_at += 0.01
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    # ---- what the caller saw -----------------------------------------------------
    async def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        async def poll():
            while True:
                value = predicate()
                if value:
                    return value
                await asyncio.sleep(0.05)

        try:
            return await asyncio.wait_for(poll(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def wait_reply(self, since: float, *, quiet_s: float = 1.0, timeout: float = 30.0) -> np.ndarray:
        """The agent's audio from its first sound after `since` until it has been quiet for
        `quiet_s` (the reply as the caller heard it)."""
        start = await self.wait_for(lambda: self.heard.first_loud(since), timeout, "the agent's voice")

        def ended() -> bool:
            last = self.heard.last_loud()
            return last is not None and bool(self.heard.frames) and self.heard.frames[-1][0] - last >= quiet_s

        await self.wait_for(ended, timeout, "the agent's reply to end")
        return self.heard.pcm(since=start, until=self.heard.last_loud() + 0.01)

    def said_by_me(self) -> str:
        """Final transcripts of this caller's own words (as the agent transcribed them)."""
        return " ".join(
            t.text for t in self.transcripts if t.final and t.track_id == self.mic_track_sid
        )

    def said_by_agent(self) -> str:
        return " ".join(
            t.text for t in self.transcripts if t.final and t.track_id != self.mic_track_sid
        )
