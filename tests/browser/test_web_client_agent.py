"""The web client in headless Chromium with the whole product behind it: the local LiveKit
server, the offline Gemini server and a real `python agent.py start` worker (devstack's
LocalStack, as `python agent.py local` and tests/e2e use it).

The page's token dispatches the agent by name (room configuration), the fake microphone
says one sentence, and the offline Gemini server is scripted to answer with a 440 Hz tone,
so the page's analyser can tell the agent's voice from anything else.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from agents.settings import Settings, WebSettings
from agents.web import LiveKitCredentials, WebServer
from devstack.stack import LocalStack

from .harness import ARTIFACTS, SPEECH, require_tools, run_driver, speech_wav

pytestmark = pytest.mark.timeout(300)

TONE_HZ = 440.0
REPLY = "I can hear you."
CHAT = "What is the capital of France?"
OUT = ARTIFACTS / "agent"


def tone_24k(seconds: float = 3.0) -> bytes:
    t = np.arange(int(24000 * seconds)) / 24000
    return (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes()


@pytest.fixture
async def product(tmp_path) -> AsyncIterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    require_tools()
    wav = speech_wav(OUT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    async with LocalStack(workdir=tmp_path / "stack", base_env=env) as stack:
        assert stack.gemini is not None and stack.livekit is not None
        script = stack.gemini.script
        script.transcripts[1] = SPEECH
        script.reply(1, text=REPLY, audio=tone_24k())
        script.default_reply_audio = tone_24k(2.0)
        worker = await stack.start_worker(
            {
                "AGENT_AGENT__GREET": "false",
                # Chromium's fake microphone has no acoustic echo: keep all the caller's audio.
                "AGENT_AUDIO__ECHO_WARMUP_S": "0",
                # Chromium and the servers share this machine's two cores; a worker that
                # reports itself full is offered no job and the page would wait forever.
                "AGENT_WORKER__LOAD_THRESHOLD": "1.0",
            }
        )
        try:
            settings = Settings(web=WebSettings(host="127.0.0.1", port=0, rate_limit_per_minute=100))
            creds = LiveKitCredentials(stack.livekit.url, stack.livekit.api_key, stack.livekit.api_secret)
            async with WebServer(settings, creds) as web:
                yield {"stack": stack, "web": web, "wav": str(wav), "worker": worker, "settings": settings}
        finally:
            await worker.stop()
            (OUT / "worker.log").write_text(worker.log_tail(400))


async def test_a_conversation_with_the_real_agent(product: dict[str, Any]) -> None:
    assert product["settings"].agent.name == "gemini-agent"  # dispatched by the token
    room = "browser-" + uuid.uuid4().hex[:8]
    r = await run_driver(
        {
            "scenario": "conversation",
            "pageUrl": product["web"].url,
            "room": room,
            "name": "Browser Tester",
            "wav": product["wav"],
            "chat": CHAT,
            "artifactsDir": str(OUT),
            "timeoutMs": 60000,
        },
        timeout_s=240,
    )
    assert r["ok"], r.get("error", "") + "\n" + r["stderr"] + "\n" + product["worker"].log_tail()
    audio = r["audio"]
    print(
        f"\nconnect {r['connectMs']} ms (click to connected {r['joinWallMs']} ms); agent seen "
        f"{r['agentSeenAfterConnectMs']} ms after connecting; agent audio {audio['dominantHz']:.1f} Hz "
        f"at {audio['peakDbfs']:.1f} dBFS; chat answered in {r['chatReplyMs']} ms; states {r['states']}"
    )

    assert r["connectionText"].startswith(f"Connected to room {room}")
    # The agent's scripted voice reached the page.
    assert audio["found"], "no audio element for the agent"
    assert abs(audio["dominantHz"] - TONE_HZ) < 10, audio
    assert audio["peakDbfs"] > -30, audio
    assert audio["agentMeterMax"] > 0.3
    assert r["micMeterMax"] > 0.1

    entries = r["transcript"]
    user_speech = [e["text"] for e in entries if e["speaker"] == "user" and e["kind"] == "speech" and e["final"]]
    agent_final = [e["text"].strip() for e in entries if e["speaker"] == "agent" and e["final"]]
    assert SPEECH in [t.strip() for t in user_speech], entries
    assert REPLY in agent_final, entries
    # The typed message reached the agent and got a spoken (and transcribed) answer.
    assert r["chatSent"] == CHAT
    # (the offline model answers a typed turn with its text: "You said: <text>")
    assert r["chatReply"] and CHAT in r["chatReply"], entries

    # The indicator followed the agent (Gemini Live turns go listening -> speaking; the
    # framework shows "thinking" only while it waits on a tool or a slow first token).
    states = r["states"]
    for state in ("listening", "speaking"):
        assert state in states, states
    assert states.index("listening") < states.index("speaking")
    assert r["pageErrors"] == [] and r["cspViolations"] == [], r
    assert r["afterLeaveText"] == "You left the conversation"
    assert (OUT / "conversation.png").stat().st_size > 10_000
