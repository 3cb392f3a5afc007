"""The web client in a real headless Chromium, against the local LiveKit server.

The browser's fake microphone plays a spoken WAV file. The page is served by the product's
web server (agents.web) and gets its token from POST /api/token.

The agent here is StandinAgent (standin_agent.py): a real livekit.rtc participant that
speaks room_io's protocol and "talks" with a 440 Hz tone. It makes the page's error paths
(refused microphone, removal, server shutdown) cheap and deterministic and shows the
"thinking" state on demand; test_web_client_agent.py runs the same conversation against
the real agent worker and the offline Gemini server.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit import api

from agents.settings import AgentIdentitySettings, Settings, WebSettings
from agents.web import LiveKitCredentials, WebServer
from devstack.livekit import LocalLiveKitServer, load_config

from .harness import ARTIFACTS, REPO, require_tools, run_driver, speech_wav
from .standin_agent import TONE_HZ, StandinAgent

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def stack() -> AsyncIterator[dict[str, Any]]:
    require_tools()
    wav = speech_wav(ARTIFACTS)
    config = load_config(REPO / "livekit.yaml", port=0, bind_addresses=["127.0.0.1"])
    async with LocalLiveKitServer(config) as lk:
        settings = Settings(
            # The stand-in joins by itself; nothing to dispatch.
            agent=AgentIdentitySettings(name=""),
            web=WebSettings(host="127.0.0.1", port=0, rate_limit_per_minute=100),
        )
        creds = LiveKitCredentials(lk.url, lk.api_key, lk.api_secret)
        async with WebServer(settings, creds) as web:
            yield {"lk": lk, "web": web, "wav": str(wav)}


def driver_config(stack: dict[str, Any], scenario: str, room: str) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "pageUrl": stack["web"].url,
        "room": room,
        "name": "Browser Tester",
        "wav": stack["wav"],
        "chat": "What is the capital of France?",
        "artifactsDir": str(ARTIFACTS),
        "timeoutMs": 45000,
    }


@contextlib.asynccontextmanager
async def agent_joining_on(lk: LocalLiveKitServer, room: str):  # type: ignore[no-untyped-def]
    """Start the stand-in agent when the page reports it has joined, like a dispatch would."""
    agents: list[StandinAgent] = []

    async def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "joined":
            agent = StandinAgent(lk.url, lk.api_key, lk.api_secret, room)
            agents.append(agent)
            await agent.start()

    try:
        yield on_event, agents
    finally:
        for agent in agents:
            await agent.aclose()


async def test_a_conversation_in_the_browser(stack: dict[str, Any]) -> None:
    room = "browser-" + uuid.uuid4().hex[:8]
    async with agent_joining_on(stack["lk"], room) as (on_event, agents):
        r = await run_driver(driver_config(stack, "conversation", room), on_event)
    assert r["ok"], r.get("error", "") + "\n" + r["stderr"]
    print(
        f"\nconnect {r['connectMs']} ms (click to connected {r['joinWallMs']} ms); agent seen "
        f"{r['agentSeenAfterConnectMs']} ms later; agent audio {r['audio']['dominantHz']:.1f} Hz at "
        f"{r['audio']['peakDbfs']:.1f} dBFS; chat answered in {r['chatReplyMs']} ms; states {r['states']}"
    )

    # Joined, and the page says so.
    assert r["connectionText"].startswith(f"Connected to room {room}")
    assert r["connectMs"] > 0
    # The agent's audio reached the page: the analyser hears its 440 Hz voice, loud enough.
    audio = r["audio"]
    assert audio["found"], "no audio element for the agent"
    assert abs(audio["dominantHz"] - TONE_HZ) < 10, audio
    assert audio["peakDbfs"] > -30, audio
    assert audio["agentMeterMax"] > 0.3, "the agent's level meter did not move"
    assert r["micMeterMax"] > 0.1, "the microphone level meter did not move"
    # The agent heard the fake microphone.
    assert agents and agents[0].user_transcribed.is_set()

    # The transcript shows both sides, finalised, with the right speakers.
    entries = r["transcript"]
    agent_lines = [e["text"] for e in entries if e["speaker"] == "agent" and e["final"]]
    user_speech = [e["text"] for e in entries if e["speaker"] == "user" and e["kind"] == "speech"]
    assert "Hello! I am the stand-in agent. How can I help you today?" in agent_lines
    assert user_speech and user_speech[0].startswith("I heard you speak"), entries
    assert all(e["final"] for e in entries), entries
    # Segments are keyed: the user's interim "I heard" was replaced, not appended.
    assert not any(e["text"] == "I heard" for e in entries)

    # The state indicator followed the agent.
    states = r["states"]
    for state in ("speaking", "listening", "thinking"):
        assert state in states, states
    assert states.index("speaking") < states.index("listening")

    # A typed message got an answer.
    assert r["chatSent"] == "What is the capital of France?"
    assert r["chatReply"] == "You wrote: What is the capital of France?"
    assert agents[0].chat_received == ["What is the capital of France?"]

    assert r["micButton"] == "Microphone: on"
    assert r["afterLeaveText"] == "You left the conversation"
    assert r["alertAfterLeave"] is None
    assert r["pageErrors"] == [] and r["cspViolations"] == [], r
    assert (ARTIFACTS / "conversation.png").stat().st_size > 10_000


async def test_refused_microphone_is_explained_and_chat_still_works(stack: dict[str, Any]) -> None:
    room = "browser-" + uuid.uuid4().hex[:8]
    async with agent_joining_on(stack["lk"], room) as (on_event, agents):
        r = await run_driver(driver_config(stack, "mic-refused", room), on_event)
    assert r["ok"], r.get("error", "") + "\n" + r["stderr"]
    assert "Microphone access was refused" in r["alert"], r["alert"]
    assert "type to the agent" in r["alert"]
    assert r["connectionState"] == "connected"
    assert r["micPressed"] == "false" and r["micButton"] == "Microphone: off"
    assert r["chatReply"] == "You wrote: What is the capital of France?"
    assert (ARTIFACTS / "mic-refused.png").exists()


async def test_a_dropped_connection_is_explained(stack: dict[str, Any]) -> None:
    room = "browser-" + uuid.uuid4().hex[:8]
    lk = stack["lk"]

    async def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "joined":
            async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
                parts = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
                for p in parts.participants:
                    await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=p.identity))

    r = await run_driver(driver_config(stack, "drop", room), on_event)
    assert r["ok"], r.get("error", "") + "\n" + r["stderr"]
    assert r["alert"] == "You were removed from the room."
    assert r["connectionText"] == "Disconnected"
    assert r["joinVisible"], "the page should offer to join again"


async def test_a_server_shutdown_is_explained(stack: dict[str, Any]) -> None:
    room = "browser-" + uuid.uuid4().hex[:8]
    lk = stack["lk"]

    async def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "joined":
            await lk.stop()

    r = await run_driver(driver_config(stack, "server-gone", room), on_event)
    assert r["ok"], r.get("error", "") + "\n" + r["stderr"]
    assert r["alert"] == "The connection dropped: the server shut down. Join again to reconnect."
    assert r["connectionText"] == "Disconnected"
    assert r["joinVisible"]


async def test_camera_screen_share_and_microphone_toggles(stack: dict[str, Any]) -> None:
    room = "browser-" + uuid.uuid4().hex[:8]
    r = await run_driver(driver_config(stack, "toggles", room))
    assert r["ok"], r.get("error", "") + "\n" + r["stderr"]
    assert r["cameraOn"]["camera"] == "Camera: on"
    assert "Your camera" in r["cameraOn"]["videos"]
    assert r["screenAlert"] is None, r["screenAlert"]
    assert r["screenOn"]["screen"] == "Share screen: on"
    assert "Your screen" in r["screenOn"]["videos"]
    assert r["allOff"] == {
        "camera": "Camera: off",
        "screen": "Share screen: off",
        "videos": [],
        "mic": "Microphone: off",
    }
