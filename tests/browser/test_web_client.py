"""The web client in headless Chromium with the whole product behind it: the local LiveKit
server, the offline Gemini server and real `python agent.py start` workers (devstack's
LocalStack, as `python agent.py local` uses it), the page served by the product's web server
with its token endpoint.

One browser runs every scenario (drive_page.mjs), one after another, and each test below
checks what one scenario showed. The fake microphone says one sentence after 9 s of
silence (after the greeting and its echo warm-up); the offline model greets and answers
with a 440 Hz tone, so the page's analyser can tell the agent's voice from anything else.
Screenshots (1280, 390 and 360 px) land in .artifacts/browser/.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from agents.settings import AgentIdentitySettings, DirectSettings, Settings, WebSettings
from agents.web import LiveKitCredentials, WebServer
from devstack.stack import LocalStack

from .harness import ARTIFACTS, SPEECH, require_tools, run_driver, speech_wav

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

TONE_HZ = 440.0
CHAT = "What is the capital of France?"
# all of them; WEB_TEST_SCENARIOS=name,name runs a subset while working on one
SCENARIOS = os.environ.get("WEB_TEST_SCENARIOS", "conversation,meeting,text-only,push-to-talk,no-agent,direct").split(",")


def tone_24k(seconds: float) -> bytes:
    t = np.arange(int(24000 * seconds)) / 24000
    return (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    """Start the stack, two workers and three web servers; run every scenario once."""
    require_tools()
    wav = speech_wav(ARTIFACTS, lead_s=9.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    async with LocalStack(workdir=tmp_path_factory.mktemp("stack"), base_env=env) as stack:
        assert stack.gemini is not None and stack.livekit is not None
        lk = stack.livekit
        script = stack.gemini.script
        script.transcripts[2] = SPEECH  # turn 1 is the greeting, turn 2 the person's words
        script.transcripts[1] = SPEECH  # direct to Gemini: no greeting, turn 1 is the person's
        script.default_reply_audio = tone_24k(1.5)
        common = {"AGENT_WORKER__NUM_IDLE_PROCESSES": "1"}
        main = await stack.start_worker(common, wait=False)
        ptt = await stack.start_worker(
            {**common, "AGENT_AGENT__NAME": "ptt-agent", "AGENT_TURN_DETECTION__MODE": "manual"}, wait=False
        )
        await asyncio.gather(stack.wait_registered(main, "gemini-agent", 120), stack.wait_registered(ptt, "ptt-agent", 120))
        creds = LiveKitCredentials(lk.url, lk.api_key, lk.api_secret)

        def web(agent_name: str) -> WebServer:
            settings = Settings(
                agent=AgentIdentitySettings(name=agent_name),
                web=WebSettings(host="127.0.0.1", port=0, rate_limit_per_minute=100, agent_join_timeout_s=3),
                direct=DirectSettings(enabled=True),
            )
            return WebServer(settings, creds)

        drops: list[bool] = []

        async def on_event(event: dict[str, Any]) -> str | None:
            # the server drops the no-agent page's signal connection once it has joined
            if event["event"] == "joined" and event["scenario"] == "no-agent":
                await asyncio.sleep(3.5)  # after the agent-missing alert (3 s)
                drops.append(await lk.drop_signal(event["room"], event["identity"]))
            if event["event"] == "ready":
                # a worker that reports itself full gets no job: wait until one can take it
                for _ in range(300):
                    if any(w.agent_name == event["agent"] and w.available for w in lk.workers.workers.values()):
                        break
                    await asyncio.sleep(0.1)
                return "go"
            return None

        # the web server mints Gemini ephemeral tokens with the (offline) service's key
        saved = {k: os.environ.get(k) for k in stack.gemini.client_env()}
        os.environ.update(stack.gemini.client_env())
        try:
            async with web("gemini-agent") as w_main, web("ptt-agent") as w_ptt, web("nobody-runs-this") as w_absent:
                results = await run_driver(
                    {
                        "urls": {"main": w_main.url, "ptt": w_ptt.url, "absent": w_absent.url},
                        "wav": str(wav),
                        "chat": CHAT,
                        "secret": stack.gemini.api_key,
                        "artifactsDir": str(ARTIFACTS),
                        "timeoutMs": 45000,
                        "scenarios": SCENARIOS,
                    },
                    on_event,
                    timeout_s=480,
                )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            await asyncio.gather(main.stop(), ptt.stop())
            (ARTIFACTS / "worker.log").write_text(main.log_tail(300))
            (ARTIFACTS / "worker-ptt.log").write_text(ptt.log_tail(300))
        yield {"results": results, "drops": drops, "worker_logs": main.log_tail(60) + ptt.log_tail(60)}


def result(run: dict[str, Any], name: str) -> dict[str, Any]:
    r = run["results"][name]
    assert r["ok"], f"{r.get('error', '')}\n{r.get('stderr', '')}\n{run['worker_logs']}"
    assert r["pageErrors"] == [], r["pageErrors"]
    assert r.get("csp", []) == [], r["csp"]
    # nothing the pages load is missing (the favicon included)
    assert r["httpErrors"] == [], r["httpErrors"]
    return r


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


async def test_one_click_conversation_greeting_speech_chat_end_and_start_again(run: dict[str, Any]) -> None:
    r = result(run, "conversation")
    print(f"\nconversation: joined in {r['joinMs']} ms; greeting {r['greetingAudio']}; states {r['states']}; "
          f"scenario {r['wallMs']} ms")
    assert r["startTitle"] == "Talk to the voice agent"
    assert r["room"].startswith("call-")  # a fresh room, made by the server
    # the greeting is heard: the agent's 440 Hz voice in the page's analyser
    audio = r["greetingAudio"]
    assert audio["found"] and abs(audio["dominantHz"] - TONE_HZ) < 10, audio
    assert audio["peakDbfs"] > -30, audio
    assert r["vizMax"] > 0.3, "the visualizer did not follow the agent's voice"
    assert r["micMax"] > 0.1, "the microphone meter did not move"
    # the echo warm-up hint was shown while the agent greeted
    assert r["hintSeenWhile"] and r["hintSeenWhile"]["state"] == "speaking", r["hintSeenWhile"]
    assert "can’t hear you" in r["hintSeenWhile"]["text"]
    # the agent's state went from connecting through speaking and listening
    states = r["states"]
    for s in ("connecting", "speaking", "listening"):
        assert s in states, states
    # both sides final, with names and times; the person's words as Gemini transcribed them
    lines = r["transcript"]
    mine = [e for e in lines if e["speaker"] == "user" and e["kind"] == "speech"]
    assert [e["text"].strip() for e in mine if e["final"]] == [SPEECH], lines
    assert all(e["who"] == "You" for e in mine)
    agent_final = [e["text"].strip() for e in lines if e["speaker"] == "agent" and e["final"]]
    assert SPEECH in agent_final, lines  # the offline model answers with the person's words
    assert all(e["time"] for e in lines)
    assert r["chat"]["sent"] == CHAT and CHAT in (r["chat"]["reply"] or ""), r["chat"]
    # download of the transcript: both sides with their names
    assert r["downloadName"].startswith("transcript-") and r["downloadName"].endswith(".txt")
    assert f"You: {SPEECH}" in r["downloadText"] and "Agent:" in r["downloadText"]
    # end, the end screen keeps the transcript, start again in a new room
    assert r["endedTitle"] == "Call ended" and r["endedReason"] == "You ended the call."
    assert r["controlsHiddenAfterEnd"]
    assert r["transcriptAfterEnd"] >= len(lines)
    assert r["restartRoom"].startswith("call-") and r["restartRoom"] != r["room"]
    assert r["transcriptAfterRestart"] >= r["transcriptAfterEnd"]
    assert len(r["separators"]) == 2 and "New conversation" in r["separators"][1]
    assert r["status"][:3] == ["idle", "connecting", "connected"] and "ended" in r["status"], r["status"]
    assert states[0] == "connecting" and states.index("ended") > states.index("speaking"), states


async def test_device_pickers_list_the_fake_devices_and_switching_the_mic_keeps_the_call(run: dict[str, Any]) -> None:
    r = result(run, "conversation")
    devices = r["devices"]
    assert any("Fake" in d for d in devices["mic-device"]) and len(devices["mic-device"]) >= 2, devices
    assert devices["camera-device"], devices
    assert any("Fake" in d for d in devices["speaker-device"]), devices
    assert r["micSwitchedTo"], devices
    assert r["statusAfterSwitch"] == "connected"
    # the switched microphone carried the person's sentence to the agent (checked above:
    # the words were heard after the switch, which came before the fake microphone spoke)
    assert any(e["speaker"] == "user" and e["kind"] == "speech" and e["final"] for e in r["transcript"])


async def test_two_tabs_in_one_meeting_from_the_invite_link(run: dict[str, Any]) -> None:
    r = result(run, "conversation")
    assert "#invite=" in r["inviteLink"]
    assert r["guestStartTitle"] == "Join the meeting" and r["guestButton"] == "Join meeting"
    assert r["guestRoom"] == r["room"]
    guest = {p["role"]: p["name"] for p in r["guestSees"]}
    host = {p["role"]: p["name"] for p in r["hostSees"]}
    assert guest == {"you": "Grace", "person": "Ada", "agent": "Agent"}, r["guestSees"]
    assert host == {"you": "Ada", "person": "Grace", "agent": "Agent"}, r["hostSees"]
    assert len({p["identity"] for p in r["guestSees"]}) == 3
    # at phone size no screen sharing is offered; at desktop size it is
    assert r["guestScreenHidden"] and r["hostScreenVisible"]
    # the guest chose text only: nothing plays
    assert len(r["guestAudio"]) == 2 and all(a["silent"] for a in r["guestAudio"]), r["guestAudio"]
    g = r["guestState"]
    assert g["csp"] == []


async def test_two_tabs_with_microphones_see_each_others_spoken_lines_under_their_names(run: dict[str, Any]) -> None:
    r = result(run, "meeting")
    print(f"\nmeeting: scenario {r['wallMs']} ms")
    # each tab: the other person's words as theirs (name and identity), its own as "user"
    for page, other in (("host", "Grace"), ("guest", "Ada")):
        lines = [e for e in r[f"{page}Transcript"] if e["kind"] == "speech" and e["final"]]
        theirs = [e for e in lines if e["speaker"] == "other"]
        assert theirs and all(e["who"] == other for e in theirs), (page, lines)
        assert any(e["speaker"] == "user" for e in lines), (page, lines)


async def test_a_text_only_conversation(run: dict[str, Any]) -> None:
    r = result(run, "text-only")
    assert r["micPublished"] == "false"
    assert "mic" not in r["alerts"], r["alerts"]  # the microphone was never asked for
    assert r["chat"]["sent"] == CHAT
    assert r["chat"]["reply"] == f"You said: {CHAT}", r["transcript"]
    assert not any(e["kind"] == "speech" and e["speaker"] == "user" for e in r["transcript"])
    # the answer came as transcript and as chat: shown once
    assert [e["text"] for e in r["transcript"] if e["speaker"] == "agent"].count(f"You said: {CHAT}") == 1, r["transcript"]
    # chat only: the agent answered in text and no voice reached the page (its greeting
    # included): any audio track the page got carried silence only
    assert r["agentAudio"]["peak"] < 0.01, r["agentAudio"]
    assert any(e["speaker"] == "agent" and e["text"].startswith("Hello") for e in r["transcript"]), r["transcript"]


async def test_push_to_talk_button(run: dict[str, Any]) -> None:
    r = result(run, "push-to-talk")
    assert r["pttLabel"] == "Hold to talk"
    assert (r["pressedWhileHeld"], r["pressedAfterRelease"], r["pressedBySpace"]) == ("true", "false", "true")
    lines = r["transcript"]
    assert [e["text"].strip() for e in lines if e["speaker"] == "user" and e["kind"] == "speech" and e["final"]] == [SPEECH]
    assert SPEECH in [e["text"].strip() for e in lines if e["speaker"] == "agent" and e["final"]], lines
    # push-to-talk has no echo warm-up: the agent hears only the pressed turn
    assert r["hintSeenWhile"] is None


async def test_agent_missing_refused_microphone_and_reconnecting_are_explained(run: dict[str, Any]) -> None:
    r = result(run, "no-agent")
    assert "Microphone access was refused" in r["alerts"]["mic"], r["alerts"]
    assert "type to the agent" in r["alerts"]["mic"]
    assert r["micPressed"] == "false"
    assert "has not joined after 3 seconds" in r["alerts"]["agent-missing"], r["alerts"]
    assert "end the call and try again" in r["alerts"]["agent-missing"]
    assert r["agentState"] == "Waiting for the agent to join…"
    # the server dropped the signal connection: reconnecting, then connected again
    assert run["drops"] == [True]
    assert r["reconnectingText"] == "Connection lost — reconnecting…"
    assert r["afterReconnect"] == "Connected"
    assert r["endedReason"] == "You ended the call."


async def test_screenshots_and_accessibility(run: dict[str, Any]) -> None:
    r = result(run, "conversation")
    for name in ("start-1280", "call-1280", "call-1280-dark", "ended-1280", "meeting-390", "meeting-390-chat",
                 "text-only-360", "push-to-talk-1280", "no-agent-390"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 5_000, name
    assert r["themeAfterSwitch"] in ("light", "dark")
    for page in ("axeStart", "axeCall", "axeCallDark", "axeEnded"):
        assert serious(r[page]) == [], (page, r[page])


async def test_direct_to_gemini_with_an_ephemeral_token_and_no_api_key_in_the_page(run: dict[str, Any]) -> None:
    r = result(run, "direct")
    print(f"\ndirect: reply {r['replyAudio']}; states {r['states']}; ws {r.get('websocketUrl')}; "
          f"received {r['received']['responses']} responses, {r['received']['frames']} frames; scenario {r['wallMs']} ms")
    # the mode is a visible choice, LiveKit by default
    assert [(o["value"], o["checked"]) for o in r["linkOptions"]] == [("livekit", True), ("direct", False)], r["linkOptions"]
    assert r["statusText"] == "Connected directly to Gemini"
    # the page opened the constrained Live endpoint itself, with the ephemeral token
    assert ".BidiGenerateContentConstrained?access_token=" in r["websocketUrl"], r["websocketUrl"]
    # the spoken sentence was answered: the offline model's 440 Hz reply played in the page
    audio = r["replyAudio"]
    assert audio["found"] and abs(audio["dominantHz"] - TONE_HZ) < 10, audio
    assert audio["peakDbfs"] > -30, audio
    assert r["vizMax"] > 0.3 and r["micMax"] > 0.1, (r["vizMax"], r["micMax"])
    assert "speaking" in r["states"] and "listening" in r["states"], r["states"]
    # both sides in the transcript, from Gemini's own transcriptions
    lines = r["transcript"]
    assert [e["text"].strip() for e in lines if e["speaker"] == "user" and e["kind"] == "speech" and e["final"]] == [SPEECH], lines
    assert SPEECH in [e["text"].strip() for e in lines if e["speaker"] == "agent" and e["final"]], lines
    # typed text is answered too
    assert r["chat"]["sent"] == CHAT and r["chat"]["reply"] == f"You said: {CHAT}", r["chat"]
    assert r["alerts"] == {}, r["alerts"]
    # the API key is in nothing the page received (HTTP bodies and headers, WebSocket frames)
    assert r["received"]["responses"] >= 5 and r["received"]["frames"] >= 20, r["received"]
    assert r["received"]["withKey"] == [], r["received"]["withKey"]
    assert r["endedReason"] == "You ended the call."
