"""The product's AgentSession with a real-time microphone and speaker instead of a room,
and the checks the tests make of what its caller hears."""

from __future__ import annotations

import asyncio

import numpy as np
from livekit.agents import AgentSession

from .audio import best_correlation, resample, trim_silence
from .session_io import Microphone, Speaker


class Conversation:
    """A running AgentSession with its microphone, speaker and transcript."""

    def __init__(self, session: AgentSession, mic: Microphone, speaker: Speaker) -> None:
        self.session, self.mic, self.speaker = session, mic, speaker
        self.messages: list[tuple[str, str]] = []
        self.tool_outputs = []
        session.on("conversation_item_added", self._on_item)
        session.on("function_tools_executed", lambda ev: self.tool_outputs.extend(ev.function_call_outputs))

    def _on_item(self, ev) -> None:
        item = ev.item
        if getattr(item, "type", None) == "message" and item.text_content:
            self.messages.append((item.role, item.text_content))

    async def wait_message(self, role: str, contains: str, timeout: float = 20.0) -> str:
        async def poll() -> str:
            while True:
                for r, text in self.messages:
                    if r == role and contains in text:
                        return text
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(poll(), timeout)


async def ask_and_hear_the_echo(conv: Conversation, question: np.ndarray, rate: int) -> None:
    """Say `question`; the agent's whole first reply (24 kHz) must be its echo."""
    conv.mic.say(question)
    [reply] = await conv.speaker.wait_for_segments(1)
    pcm, reply_rate = reply.pcm()
    assert reply_rate == 24000 and not reply.interrupted
    expected = trim_silence(resample(question, rate, 24000), 24000)
    assert best_correlation(trim_silence(pcm, 24000), expected) >= 0.9


async def talk_over_the_agent(conv: Conversation, words: np.ndarray, after_s: float = 1.0) -> None:
    """Say `words` once the agent's first answer has played for `after_s` seconds."""

    async def agent_speaking() -> None:
        while not conv.speaker.segments or conv.speaker.segments[0].played_s < after_s:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(agent_speaking(), 20)
    conv.mic.say(words)


def rt_session(conv: Conversation):
    """The conversation's Gemini session (agents/gemini: its faults, rotations, failure)."""
    return conv.session.current_agent.realtime_llm_session


async def agent_has_played(conv: Conversation, seconds: float, segment: int = 0, timeout: float = 20.0) -> None:
    """Wait until the agent's `segment`-th utterance has played for `seconds`."""

    async def played() -> None:
        while len(conv.speaker.segments) <= segment or conv.speaker.segments[segment].played_s < seconds:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(played(), timeout)


def assert_whole_echo(segment, question: np.ndarray, rate: int) -> None:
    """The agent's utterance is the offline model's echo of the whole question."""
    pcm, reply_rate = segment.pcm()
    expected = trim_silence(resample(question, rate, reply_rate), reply_rate)
    heard = trim_silence(pcm, reply_rate)
    assert len(heard) >= 0.95 * len(expected), (
        f"the reply was cut: {len(heard) / reply_rate:.2f} s of {len(expected) / reply_rate:.2f} s")
    assert best_correlation(heard, expected) >= 0.9
