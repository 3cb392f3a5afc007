"""Video to the model, the greeting, and the WAV call client, through the local LiveKit
server with a real worker process running the product's defaults (greeting on)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import wave

import numpy as np
import pytest
import pytest_asyncio
from livekit import rtc

from ..support.audio import read_wav, resample, speech_similarity, speech_wav, trim_silence
from ..support.caller import RATE

pytestmark = pytest.mark.asyncio(loop_scope="module")

VIDEO_FPS = 2.0
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(stack):
    w = await stack.start_worker({
        "AGENT_VIDEO__ENABLED": "true",
        "AGENT_VIDEO__FPS": str(VIDEO_FPS),
        "AGENT_VIDEO__SILENT_FPS": str(VIDEO_FPS),  # a fixed rate (tests/features: the adaptive one)
        "AGENT_AUDIO__AUTO_GAIN_CONTROL": "false",
    })
    yield w
    await w.stop()


async def publish_video(caller, source: rtc.TrackSource.ValueType, seconds: float, fps: int = 15):
    """Publish moving test frames (a bar sweeping across) for `seconds`."""
    width, height = 320, 240
    video = rtc.VideoSource(width, height)
    track = rtc.LocalVideoTrack.create_video_track("screen" if source == rtc.TrackSource.SOURCE_SCREENSHARE else "camera", video)
    await caller.room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=source))
    frame = np.zeros((height, width, 4), np.uint8)
    for i in range(int(seconds * fps)):
        frame[:] = 30
        x = (i * 8) % width
        frame[:, x : x + 20, :3] = (255, 200, 0)
        video.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, frame.tobytes()))
        await asyncio.sleep(1 / fps)


async def test_greeting_reaches_the_caller(worker, stack, join):
    caller = await join()
    await caller.wait_agent()
    greeting = await caller.wait_reply(0, timeout=30)
    assert len(greeting) / RATE > 0.5
    await caller.wait_for(lambda: "Greet the user briefly" in caller.said_by_agent(), 15,
                          "the greeting's transcript")


@pytest.mark.parametrize("kind", ["sip", None])
async def test_words_over_the_greeting_reach_the_model_only_from_a_phone(worker, stack, join, speech, kind):
    """A phone line has no acoustic echo: a caller talking over the greeting is heard. A
    browser on speakers would feed the agent's own voice back, so its microphone reaches
    the model as silence while the first reply plays (audio.echo_warmup_s)."""
    tone = (np.sin(2 * np.pi * 330 * np.arange(24000 * 4) / 24000) * 8000).astype(np.int16)
    stack.gemini.script.reply(1, text="a long greeting", audio=tone.tobytes())
    try:
        earlier = len(stack.gemini.sessions)
        caller = await join(kind=kind)
        await caller.wait_agent()
        await caller.wait_for(lambda: caller.heard.first_loud(0), 30, "the greeting")
        # the call's open connection (a phone agent's own tools reconnect it once at start)
        session = [s for s in stack.gemini.sessions[earlier:] if not s.closed.is_set()][-1]
        words = speech("Hello, I am calling about my order")
        start = len(session.audio_in)
        caller.say(words)
        await caller.wait_spoken()
        await asyncio.sleep(0.5)  # the last words on their way to the model
        heard = resample(np.frombuffer(bytes(session.audio_in[start:]), np.int16), 16000, RATE)
        if kind == "sip":
            assert speech_similarity(trim_silence(resample(heard, RATE, 16000), 16000),
                                     trim_silence(resample(words, RATE, 16000), 16000), 16000) >= 0.8
        else:
            assert len(heard) >= len(words) and int(np.abs(heard.astype(np.int32)).max()) < 100
    finally:
        stack.gemini.script.reset()


@pytest.mark.parametrize("source", [rtc.TrackSource.SOURCE_CAMERA, rtc.TrackSource.SOURCE_SCREENSHARE])
async def test_video_reaches_the_model_as_jpeg_at_the_configured_rate(worker, stack, join, source):
    earlier = len(stack.gemini.sessions)
    caller = await join()
    await caller.wait_agent()
    await caller.wait_reply(0, timeout=30)  # let the greeting finish
    session = stack.gemini.sessions[earlier]
    before = len(session.video_frames)
    seconds = 6.0
    await publish_video(caller, source, seconds)
    frames = session.video_frames[before:]
    assert len(frames) >= 3, "no video reached the model"
    assert all(f.mime_type == "image/jpeg" and f.data[:3] == b"\xff\xd8\xff" for f in frames)
    span = frames[-1].at - frames[0].at
    # never faster than configured: n frames need at least (n - 1) / fps seconds
    assert len(frames) - 1 <= span * VIDEO_FPS + 1


async def test_wav_call_records_the_agents_reply(worker, stack, tmp_path):
    question = speech_wav("Could you please repeat this sentence back to me", tmp_path / "q.wav")
    # the client takes any rate and channel count: give it 8 kHz stereo, like a phone export
    q, rate = read_wav(question)
    q8 = resample(q, rate, 8000)
    with wave.open(str(tmp_path / "q8.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.repeat(q8[:, None], 2, axis=1).tobytes())
    env = {**stack.env(), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "agent.py"), "call", "--input", str(tmp_path / "q8.wav"),
        "--output", str(tmp_path / "reply.wav"), "--timeout", "60",
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "wrote" in out.decode()
    reply, reply_rate = read_wav(tmp_path / "reply.wav")
    similarity = speech_similarity(
        trim_silence(resample(reply, reply_rate, 16000), 16000),
        trim_silence(resample(q8, 8000, 16000), 16000),
        16000,
    )
    assert similarity >= 0.8
