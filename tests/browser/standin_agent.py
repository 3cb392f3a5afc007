"""A stand-in for the agent worker: a real `livekit.rtc` participant speaking room_io's protocol.

Used by the browser tests while no agent worker fixture exists. It behaves, on the wire, as
livekit-agents' room_io does (see site-packages/livekit/agents/voice/room_io/):
  - identity "agent-…", participant kind AGENT, attribute `lk.agent.state` moving through
    initializing -> speaking -> listening -> thinking -> speaking -> listening;
  - "speech" is a 440 Hz tone on a microphone track (so the page's analyser can check it);
  - its own words as a delta text stream on `lk.transcription` (one stream per segment,
    `lk.segment_id`, `lk.transcribed_track_id`, `lk.transcription_final` in the trailer);
  - the user's speech transcribed on the user's behalf (sender_identity = the user,
    full text per stream, final flag in the header);
  - text on `lk.chat` from the user answered by speaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid

import numpy as np
from livekit import api, rtc

logger = logging.getLogger("tests.browser.standin")

SAMPLE_RATE = 48000
TONE_HZ = 440.0
FRAME_MS = 10
TOPIC_TRANSCRIPTION = "lk.transcription"
TOPIC_CHAT = "lk.chat"


class StandinAgent:
    def __init__(self, url: str, api_key: str, api_secret: str, room: str) -> None:
        self.identity = "agent-standin-" + uuid.uuid4().hex[:6]
        self._url, self._key, self._secret, self._room_name = url, api_key, api_secret, room
        self.room = rtc.Room()
        self.source = rtc.AudioSource(SAMPLE_RATE, 1)
        self._speaking = asyncio.Event()
        self._phase = 0.0
        self._tasks: set[asyncio.Task] = set()
        self._track_sid = ""
        self.heard_user_audio_frames = 0
        self.chat_received: list[str] = []
        self.user_transcribed = asyncio.Event()
        self._busy = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        token = (
            api.AccessToken(self._key, self._secret)
            .with_identity(self.identity)
            .with_name("Stand-in agent")
            .with_kind("agent")
            .with_attributes({"lk.agent.state": "initializing"})
            .with_grants(
                api.VideoGrants(room_join=True, room=self._room_name, agent=True, can_update_own_metadata=True)
            )
            .to_jwt()
        )
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.register_text_stream_handler(TOPIC_CHAT, self._on_chat)
        await self.room.connect(self._url, token)
        track = rtc.LocalAudioTrack.create_audio_track("agent-voice", self.source)
        pub = await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self._track_sid = pub.sid
        self._spawn(self._audio_loop())
        self._spawn(self._greet())

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        await self.room.disconnect()

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ speaking
    async def _set_state(self, state: str) -> None:
        await self.room.local_participant.set_attributes({"lk.agent.state": state})

    async def _audio_loop(self) -> None:
        n = SAMPLE_RATE * FRAME_MS // 1000
        step = 2 * math.pi * TONE_HZ / SAMPLE_RATE
        silence = np.zeros(n, dtype=np.int16)
        while True:
            if self._speaking.is_set():
                t = self._phase + step * np.arange(n)
                self._phase = float((t[-1] + step) % (2 * math.pi))
                samples = (0.3 * 32767 * np.sin(t)).astype(np.int16)
            else:
                samples = silence
            frame = rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, n)
            await self.source.capture_frame(frame)  # paced by the source's queue

    async def say(self, text: str, seconds: float = 3.0) -> None:
        """Speak (a tone) while streaming `text` word by word as the agent's transcription."""
        async with self._busy:
            await self._set_state("speaking")
            self._speaking.set()
            writer = await self.room.local_participant.stream_text(
                topic=TOPIC_TRANSCRIPTION,
                attributes={
                    "lk.segment_id": "SG_" + uuid.uuid4().hex[:12],
                    "lk.transcribed_track_id": self._track_sid,
                    "lk.transcription_final": "false",
                },
            )
            words = text.split()
            for i, word in enumerate(words):
                await writer.write(word if i == 0 else " " + word)
                await asyncio.sleep(seconds / max(1, len(words)))
            await writer.aclose(attributes={"lk.transcription_final": "true"})
            self._speaking.clear()
            await self._set_state("listening")

    async def _greet(self) -> None:
        await asyncio.sleep(0.5)
        await self.say("Hello! I am the stand-in agent. How can I help you today?", seconds=4.0)

    # ------------------------------------------------------------------ listening
    def _on_track_subscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(self._listen(track, pub.sid, participant.identity))

    async def _listen(self, track: rtc.Track, track_sid: str, identity: str) -> None:
        stream = rtc.AudioStream(track, sample_rate=16000, num_channels=1)
        loud = 0
        async for ev in stream:
            samples = np.frombuffer(ev.frame.data, dtype=np.int16)
            self.heard_user_audio_frames += 1
            if samples.size and np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300:
                loud += 1
            # About a second of the user's voice: transcribe it once, then answer.
            if loud >= 50 and not self.user_transcribed.is_set():
                self.user_transcribed.set()
                self._spawn(self._answer_speech(identity, track_sid, loud))

    async def _answer_speech(self, identity: str, track_sid: str, loud_frames: int) -> None:
        segment = "SG_" + uuid.uuid4().hex[:12]
        for text, final in (("I heard", "false"), (f"I heard you speak ({loud_frames * 10} ms of voice)", "true")):
            # As room_io's non-delta output does: a whole new stream per update.
            writer = await self.room.local_participant.stream_text(
                topic=TOPIC_TRANSCRIPTION,
                attributes={
                    "lk.segment_id": segment,
                    "lk.transcribed_track_id": track_sid,
                    "lk.transcription_final": final,
                },
                sender_identity=identity,
            )
            await writer.write(text)
            await writer.aclose()
        await self._set_state("thinking")
        await asyncio.sleep(0.8)
        await self.say("Thanks, I heard your voice.", seconds=2.0)

    def _on_chat(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            self.chat_received.append(text)
            await self._set_state("thinking")
            await asyncio.sleep(0.5)
            await self.say(f"You wrote: {text}", seconds=2.0)

        self._spawn(read())
