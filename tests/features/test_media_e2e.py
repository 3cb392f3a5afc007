"""Video and noise suppression through the whole product: the local LiveKit server, the
offline Gemini server (which records what the model receives) and a real worker process.
Noise suppression is set per kind of caller, so the same worker serves the path with it
(an SDK caller) and without it (a phone caller) side by side."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess

import numpy as np
import pytest
import pytest_asyncio
from livekit import rtc

from devstack.stack import LocalStack

from ..support.audio import resample, trim_silence
from ..support.caller import RATE, Caller, caller_token
from ..support.video import VideoTrack, colour

pytestmark = pytest.mark.asyncio(loop_scope="module")

_rooms = itertools.count(1)
COMMON = {
    "AGENT_AGENT__GREET": "false",
    "AGENT_AUDIO__ECHO_WARMUP_S": "0",
    "AGENT_AUDIO__AUTO_GAIN_CONTROL": "false",  # levels as sent: the SNR compares like with like
    "AGENT_WORKER__NUM_IDLE_PROCESSES": "2",  # two calls at once (the noise test)
}
SPEAKING_FPS, SILENT_FPS = 2.0, 0.5
FEATURES = COMMON | {
    "AGENT_AGENT__NAME": "features-agent",
    "AGENT_VIDEO__ENABLED": "true",
    "AGENT_VIDEO__FPS": str(SPEAKING_FPS),
    "AGENT_VIDEO__SILENT_FPS": str(SILENT_FPS),
    "AGENT_NOISE__SDK": "webrtc",  # the Python SDK caller is an "sdk" caller
    "AGENT_NOISE__PHONE": "off",  # and with a SIP token it is a "phone" caller
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    async with LocalStack(workdir=tmp_path_factory.mktemp("stack"), base_env=env) as s:
        await s.start_worker(FEATURES)
        yield s


class ModelSide:
    """What the model received for one caller's room: the offline server's sessions opened
    since the caller joined, told apart by what they receive (a job for a room given up on
    opens a session of its own, perhaps late)."""

    def __init__(self, gemini, earlier: int) -> None:
        self.gemini, self.earlier = gemini, earlier
        self._audio: dict[int, int] = {}
        self._video: dict[int, int] = {}

    def _sessions(self) -> list:
        return self.gemini.sessions[self.earlier:]

    def mark(self) -> None:
        self._audio = {id(s): len(s.audio_in) for s in self._sessions()}
        self._video = {id(s): len(s.video_frames) for s in self._sessions()}

    def hearing(self):
        """The session that heard this caller since mark() (the loudest: one talks at a time)."""
        def loudness(s) -> float:
            new = np.frombuffer(bytes(s.audio_in[self._audio.get(id(s), 0):]), np.int16)
            return float(np.abs(new).mean()) if len(new) else -1.0

        return max(self._sessions(), key=loudness)

    def audio_since_mark(self) -> np.ndarray:
        s = self.hearing()
        return np.frombuffer(bytes(s.audio_in[self._audio.get(id(s), 0):]), np.int16)

    def video_since_mark(self) -> list:
        return max((s.video_frames[self._video.get(id(s), 0):] for s in self._sessions()), key=len, default=[])

    async def video_during(self, seconds: float) -> list:
        self.mark()
        await asyncio.sleep(seconds)
        return self.video_since_mark()


@pytest_asyncio.fixture(loop_scope="module")
async def join(stack):
    callers: list[Caller] = []

    async def make(kind: str | None = None) -> tuple[Caller, ModelSide]:
        # On a saturated machine the worker can report itself full (CPU load 1.0) and turn
        # a job down; a person would call again, and so does this.
        earlier = len(stack.gemini.sessions)
        for _ in range(3):
            caller = Caller("caller")
            room = f"features-{next(_rooms)}"
            await caller.join(stack.livekit.url, caller_token(
                stack.livekit.api_key, stack.livekit.api_secret, room, "caller",
                agent_name="features-agent", kind=kind))
            callers.append(caller)
            try:
                await caller.wait_agent(timeout=30)
            except asyncio.TimeoutError:
                await caller.leave()
                continue
            await stack.gemini.wait_for_session(earlier + 1, timeout=30)
            return caller, ModelSide(stack.gemini, earlier)
        raise AssertionError("the agent joined none of 3 rooms")

    yield make
    for c in callers:
        await asyncio.wait_for(c.leave(), 15)


async def test_screen_share_goes_to_the_model_when_camera_and_screen_are_both_on(join):
    caller, model = await join()
    screen = await VideoTrack(caller, rtc.TrackSource.SOURCE_SCREENSHARE, (0, 0, 230)).start()
    await asyncio.sleep(1.0)
    # the camera comes last: left to itself, the framework would switch to it
    camera = await VideoTrack(caller, rtc.TrackSource.SOURCE_CAMERA, (230, 0, 0)).start()
    await asyncio.sleep(2.0)  # the camera's subscription settles
    frames = await model.video_during(5.0)
    assert len(frames) >= 2, "no video reached the model"
    assert {colour(f.data) for f in frames} == {"blue"}, "the camera reached the model, not the screen"
    # the screen share ends: the camera takes over
    await screen.stop()
    await asyncio.sleep(2.0)
    frames = await model.video_during(5.0)
    assert frames and {colour(f.data) for f in frames} == {"red"}
    await camera.stop()


async def test_the_frame_rate_rises_while_the_person_speaks(join, speech):
    caller, model = await join()
    camera = await VideoTrack(caller, rtc.TrackSource.SOURCE_CAMERA, (0, 200, 0)).start()
    await asyncio.sleep(2.0)  # subscribed, first frame sent
    silent = await model.video_during(6.0)
    words = speech("The quick brown fox jumps over the lazy dog near the quiet river bank today")
    spoken_s = len(words) / RATE
    model.mark()
    caller.say(words)
    await caller.wait_spoken()
    speaking = model.video_since_mark()
    await camera.stop()
    silent_rate = len(silent) / 6.0
    speaking_rate = len(speaking) / spoken_s
    # silent: about SILENT_FPS; speaking: about SPEAKING_FPS (4x); at least twice as fast
    assert silent_rate <= SILENT_FPS + 1 / 6.0, f"{len(silent)} frames in 6 s of silence"
    assert speaking_rate >= 2 * max(silent_rate, SILENT_FPS), (
        f"{len(speaking)} frames in {spoken_s:.1f} s of speech vs {len(silent)} in 6 s of silence")


# ---- noise suppression -------------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy(speech, tmp_path_factory):
    """(the speech alone, the speech in a noisy room, where the speech starts), 48 kHz. The
    room's pink noise (sox) runs from the start, as a real room's does: a suppressor learns
    the noise in the first seconds of a call (WebRTC's needs ~5 s after a quiet start)."""
    clean = speech("Please tell me the weather forecast for Paris tomorrow morning").astype(np.float32)
    path = tmp_path_factory.mktemp("noise") / "pink.wav"
    lead, tail = int(LEAD_S * RATE), int(1.0 * RATE)
    total_s = (lead + len(clean) + tail) / RATE
    subprocess.run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed", str(path),
                    "synth", f"{total_s:.3f}", "pinknoise", "vol", "0.12"], check=True)
    noise = np.frombuffer(path.read_bytes()[44:], np.int16).astype(np.float32)
    placed = np.zeros(lead + len(clean) + tail, np.float32)
    placed[lead : lead + len(clean)] = clean
    n = min(len(noise), len(placed))
    mixed = np.clip(placed[:n] + noise[:n], -32768, 32767).astype(np.int16)
    return placed[:n], mixed, lead


LEAD_S = 5.0


def levels_at_model(received: np.ndarray, placed: np.ndarray, lead: int) -> tuple[float, float]:
    """(speech dBFS, noise dBFS) in what the model received (16 kHz) since the caller began:
    the two stretches are found in the sent signal, after aligning it with the received one.
    The noise is measured in the last two seconds before the words."""
    ref = resample(placed.astype(np.int16), RATE, 16000).astype(np.float32)
    rx = received.astype(np.float32)
    n = 1 << int(np.ceil(np.log2(len(rx) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(rx, n) * np.conj(np.fft.rfft(ref, n)), n)
    # the recording starts as the caller starts to talk: the path's delay is well under 0.5 s
    offset = int(np.argmax(corr[: 8000]))
    rx = rx[offset : offset + len(ref)]
    ref = ref[: len(rx)]
    win = 320  # 20 ms
    frames = len(rx) // win
    ref_db = np.array([10 * np.log10(np.mean(ref[i * win:(i + 1) * win] ** 2) + 1e-9) for i in range(frames)])
    speech = np.concatenate([rx[i * win:(i + 1) * win] for i in range(frames) if ref_db[i] > ref_db.max() - 20])
    lead16 = lead * 16000 // RATE
    noise_only = rx[lead16 - 2 * 16000 : lead16 - 1600]

    def db(x: np.ndarray) -> float:
        return float(10 * np.log10(np.mean(x ** 2) / 32768**2 + 1e-12))

    return db(speech), db(noise_only)


async def test_noise_suppression_raises_the_snr_the_model_hears_and_the_words_are_answered(join, noisy):
    placed, mixed, lead = noisy
    heard = {}
    # a phone caller (noise.phone: off), then an SDK caller (noise.sdk: webrtc), one at a
    # time so each model session is the one that hears something
    for kind in ("sip", None):
        caller, model = await join(kind)
        model.mark()
        caller.say(mixed)
        spoken_at = await caller.wait_spoken()
        await asyncio.sleep(0.5)  # the last words on their way
        heard[kind] = levels_at_model(model.audio_since_mark(), placed, lead)
    (speech_on, noise_on), (speech_off, noise_off) = heard[None], heard["sip"]
    snr_on, snr_off = speech_on - noise_on, speech_off - noise_off
    assert snr_on >= snr_off + 6.0, f"SNR at the model: {snr_on:.1f} dB with suppression, {snr_off:.1f} dB without"
    # the words themselves are not suppressed with the noise
    assert abs(speech_on - speech_off) <= 4.0, f"speech at {speech_on:.1f} dBFS with suppression, {speech_off:.1f} without"
    # and the model took them as the caller's turn(s) and answered: the offline model echoes
    # each utterance it detects, so the caller hears the words come back
    session = model.hearing()
    await caller.wait_reply(spoken_at, timeout=30)
    words_s = len(trim_silence(placed.astype(np.int16), RATE)) / RATE
    taken_s = sum(len(u) for u in session.utterances) / 2 / 16000
    assert taken_s >= 0.8 * words_s, f"the model took {taken_s:.1f} s of {words_s:.1f} s of words as speech"
