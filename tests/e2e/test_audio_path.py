"""The low-latency audio path (agents/audio_path.py, the product's default) as the caller
hears it: the agent's voice has no underrun gaps, and a framework-default worker still
works the same. No timing is asserted here; bench/ measures the latencies."""

from __future__ import annotations

import numpy as np
import pytest

from ..support.audio import best_correlation, resample, trim_silence
from ..support.caller import RATE
from .conftest import HEADSET_AGENT_ENV
from .test_room_conversation import sounds_like

pytestmark = pytest.mark.asyncio(loop_scope="module")


def tone(seconds: float, freq: float = 440.0, rate: int = 24000) -> np.ndarray:
    return (np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate) * 12000).astype(np.int16)


def silent_frames_inside(heard: list[tuple[float, np.ndarray]], since: float) -> int:
    frames = [a for t, a in heard if t >= since]
    loud = [i for i, a in enumerate(frames) if len(a) and np.abs(a).max() >= 500]
    if not loud:
        return -1
    return sum(1 for a in frames[loud[0]: loud[-1] + 1] if not len(a) or np.abs(a).max() < 500)


async def test_agent_voice_has_no_gaps_and_is_intact(worker, stack, join, speech):
    reply = tone(2.0)
    stack.gemini.script.default_reply_audio = reply.tobytes()
    try:
        caller = await join()
        await caller.wait_agent()
        caller.say(speech("Play me a long note."))
        spoken = await caller.wait_spoken()
        heard = await caller.wait_reply(spoken, quiet_s=0.5)
        # a continuous tone: any silent 10 ms frame inside it is an underrun of the output
        assert silent_frames_inside(caller.heard.frames, spoken) == 0
        assert len(heard) >= 1.9 * RATE
        assert best_correlation(trim_silence(heard, RATE), trim_silence(resample(reply, 24000, RATE), RATE)) >= 0.9
    finally:
        stack.gemini.script.reset()


async def test_framework_default_audio_path_still_answers(stack, join, speech):
    w = await stack.start_worker({**HEADSET_AGENT_ENV, "AGENT_LATENCY__MODE": "framework",
                                  "AGENT_AGENT__NAME": "framework-agent"})
    try:
        earlier = len(stack.gemini.sessions)
        caller = await join(agent_name="framework-agent")
        await caller.wait_agent()
        question = speech("Is the old path still there?")
        caller.say(question)
        spoken = await caller.wait_spoken()
        heard = await caller.wait_reply(spoken)
        session = stack.gemini.sessions[earlier]  # this room's agent's session
        said = resample(np.frombuffer(bytes(b"".join(session.replies)), np.int16), 24000, RATE)
        # the framework's 50 ms frames reach the caller's jitter buffer in bursts, which it
        # evens out by stretching: compare how it sounds, not sample for sample
        assert sounds_like(heard, said) >= 0.8
    finally:
        await w.stop()
