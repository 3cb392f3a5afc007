"""A real SIP phone (pjsua2) calls the agent through the local SIP gateway, and the agent
calls it: what a phone caller hears, what the model gets, what the room shows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import pytest_asyncio
from livekit import api

from ..support.audio import dominant_frequency, envelope_correlation, trim_silence, write_wav
from .client import PhoneProcess
from .conftest import CALLED, CALLER, SHORT_CALL, SILENT_CALL, SipWorld, read_recording, run_agent_py

pytestmark = pytest.mark.asyncio(loop_scope="package")

RATE = 8000
GREETING_HZ = 600
NOTICE_HZ = 900


def tone(hz: float, seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16).tobytes()


async def until(pred, what: str, timeout: float = 60.0):
    async def poll():
        while not (v := pred()):
            await asyncio.sleep(0.1)
        return v

    try:
        return await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def said(history: list[dict], role: str = "user") -> str:
    return " | ".join(h.get("text", "") for h in history if h.get("role") == role)


def tool_responses(history: list[dict]) -> list[dict]:
    return [r for h in history for r in h.get("function_responses", [])]


@pytest_asyncio.fixture(loop_scope="package")
async def script(world: SipWorld):
    world.stack.gemini.script.reset()
    world.stack.gemini.script.reply(1, text="Hello, this is the agent.", audio=tone(GREETING_HZ, 1.5))
    # a fresh phone (pjsua2 process) on the same port for every call test
    port = world.phone.port
    await world.phone.stop()
    world.phone = await PhoneProcess(port).start()
    yield world.stack.gemini.script
    world.stack.gemini.script.reset()
    # whatever the test left: no call up
    await world.phone.idle()
    for _ in range(100):
        if not world.gateway.calls:
            break
        await asyncio.sleep(0.1)


async def worker_free(world: SipWorld) -> None:
    """On this shared machine the worker reports itself full when the CPU is saturated, and
    LiveKit then dispatches nobody: wait until it takes calls again before placing one."""
    await until(lambda: any(w.available for w in world.stack.livekit.workers.workers.values()),
                "the agent worker to take calls", 60)


async def dial(world: SipWorld, number: str = CALLED, **media) -> int:
    await worker_free(world)
    m = world.phone.mark()
    world.phone.send(cmd="dial", uri=world.uri_of(number), **media)
    await world.phone.wait_state("CONFIRMED", since=m)
    return m


async def hang_up(world: SipWorld, m: int) -> None:
    world.phone.send(cmd="hangup")
    await world.phone.wait_state("DISCONNECTED", since=m)


async def test_caller_hears_greeting_then_the_echo_of_its_question(world: SipWorld, script, speech):
    since = len(world.stack.gemini.sessions)
    question = speech("Could you tell me what the weather will be like in Paris tomorrow", RATE)
    wav = write_wav(world.tmp / "question.wav", np.concatenate([question, np.zeros(RATE)]), RATE)
    rec = world.tmp / "heard.wav"
    m = await dial(world, record=str(rec))

    # the room: a SIP participant as LiveKit's SIP service makes it, and the rule's agent
    room = await until(lambda: world.gateway.calls and next(iter(world.gateway.calls.values())).room_name,
                       "the call's room")
    # the agent the rule dispatched joins, and the answered call's status (sent on the ACK)
    # reaches the room: the agent, dispatched when the caller joined, can be there first
    for _ in range(300):
        present = await world.rooms()
        people = present.get(room, [])
        if any(p.kind == api.ParticipantInfo.Kind.AGENT for p in people) and any(
                p.attributes.get("sip.callStatus") == "active" for p in people):
            break
        await asyncio.sleep(0.2)
    assert room.startswith(f"call_{CALLER}_")
    people = {p.identity: p for p in present[room]}
    sip = people[f"sip_{CALLER}"]
    assert sip.kind == api.ParticipantInfo.Kind.SIP and sip.name == f"Phone {CALLER}"
    async with world.api() as lk:
        trunk = next(t for t in (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
                     if t.name == "test-inbound")
        rule = next(r for r in (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
                    if r.name == "test-calls")
    attrs = dict(sip.attributes)
    assert attrs["sip.phoneNumber"] == CALLER and attrs["sip.trunkPhoneNumber"] == CALLED
    assert attrs["sip.trunkID"] == trunk.sip_trunk_id and attrs["sip.ruleID"] == rule.sip_dispatch_rule_id
    assert attrs["sip.callStatus"] == "active" and attrs["sip.callID"].startswith("SCL_")
    agents = [p for p in present[room] if p.kind == api.ParticipantInfo.Kind.AGENT]
    assert agents and agents[0].attributes["lk.agent.name"] == "gemini-agent", present[room]

    # the model was told it is on the phone, with the caller's number
    await until(lambda: any("telephone call" in s.conversation.system_instruction
                            for s in world.gemini_sessions(since)), "the phone instructions")
    # (the number, known once the caller is, follows as the plugin's mid-session instruction update)
    await until(lambda: any(CALLER in s.conversation.system_instruction + said(s.conversation.history, "model")
                            for s in world.gemini_sessions(since)), "the caller's number at the model", 10)

    # the greeting plays, then the caller asks; the offline model echoes the question
    await until(lambda: "Hello" in said(world.history(since), "model"), "the greeting")
    await asyncio.sleep(2.0)
    world.phone.send(cmd="play", wav=str(wav))
    await until(lambda: "utterance" in said(world.history(since), "model"), "the model's answer", 40)
    await asyncio.sleep(len(question) / RATE + 4.0)  # its playout to the phone (a busy machine lags)
    await hang_up(world, m)
    # the caller hanging up ends the job and closes the room
    await until(lambda: room not in world.stack.livekit.rooms.rooms, "the room to close", 20)

    heard = read_recording(rec)
    loud = np.nonzero(np.abs(heard) > 1000)[0]
    assert len(loud), "the phone heard nothing"
    greeting = heard[loud[0]: loud[0] + RATE]  # the first thing the phone heard
    assert abs(dominant_frequency(greeting, RATE) - GREETING_HZ) < 15
    assert envelope_correlation(question, heard[loud[0] + RATE:], RATE) >= 0.8
    # the dispatch said "phone call" (the provisioned rule's metadata): the model's early
    # connection was set up with the phone agent's tools, so the call had one Live setup
    setups = world.gemini_sessions(since)
    assert len(setups) == 1, [[f.get("name") for t in (s.setup or {}).get("tools", [])
                               for f in t.get("functionDeclarations", t.get("function_declarations", []))]
                              for s in setups]


async def test_keypad_digits_reach_the_model_and_the_agent_presses_keys(world: SipWorld, script):
    since = len(world.stack.gemini.sessions)
    # turn 2 is the caller's first keypad message: the model presses 1 2 3 back
    script.tool_call(2, "send_dtmf_events", {"events": ["1", "2", "3", "#"]})
    m = await dial(world)
    await until(lambda: "Hello" in said(world.history(since), "model"), "the greeting")
    world.phone.send(cmd="dtmf", digits="42")
    await until(lambda: "pressed 4 2" in said(world.history(since)), "the keypad message at the model")
    await until(lambda: len(world.phone.digits(m)) >= 4, "the agent's digits at the phone", 20)
    assert world.phone.digits(m) == "123#"
    await hang_up(world, m)


async def test_digits_collected_with_the_framework_task(world: SipWorld, script):
    since = len(world.stack.gemini.sessions)
    script.tool_call(2, "collect_digits", {"num_digits": 4, "what": "your PIN"})
    m = await dial(world)
    await until(lambda: "Hello" in said(world.history(since), "model"), "the greeting")
    world.phone.send(cmd="dtmf", digits="9")
    await until(lambda: "pressed 9" in said(world.history(since)), "the keypad message")
    await asyncio.sleep(2.0)  # the collection task asks for the PIN
    world.phone.send(cmd="dtmf", digits="2468#")
    # what the caller typed reaches the model once the task hands back
    await until(lambda: any("typed 2 4 6 8" in str(m.body) for s in world.gemini_sessions(since)
                            for m in s.received if m.kind in ("tool_response", "client_content")),
                "the collected digits at the model", 40)
    await hang_up(world, m)


async def test_end_call_hangs_up_the_phone(world: SipWorld, script):
    since = len(world.stack.gemini.sessions)
    script.tool_call(2, "end_call", {})
    m = await dial(world)
    await until(lambda: "Hello" in said(world.history(since), "model"), "the greeting")
    world.phone.send(cmd="dtmf", digits="0")
    await world.phone.wait_state("DISCONNECTED", since=m, timeout=60)  # the gateway's BYE
    assert not world.gateway.calls


async def test_dial_rings_a_phone_and_the_agent_speaks_first(world: SipWorld, script):
    # the callee's first key makes the model press keys itself (the framework's send_dtmf_events)
    script.tool_call(2, "send_dtmf_events", {"events": ["4", "5", "6", "*"]})
    rec = world.tmp / "callee.wav"
    world.phone.send(cmd="incoming", mode="answer", record=str(rec))
    m = world.phone.mark()
    await worker_free(world)
    rc, out, err = await run_agent_py(world.env, "dial", CALLER)
    assert rc == 0, err
    assert "answered" in out
    answered = await world.phone.wait_state("CONFIRMED", since=m)
    await asyncio.sleep(3.0)  # the greeting plays
    world.phone.send(cmd="dtmf", call=answered["call"], digits="1")
    # the agent's digits reach the phone on the call it placed, in order
    await until(lambda: len(world.phone.digits(m)) >= 4, "the agent's digits at the callee", 30)
    assert world.phone.digits(m) == "456*"
    await hang_up(world, m)
    heard = trim_silence(read_recording(rec), RATE)
    assert len(heard) > RATE // 2 and abs(dominant_frequency(heard, RATE) - GREETING_HZ) < 15

    world.phone.send(cmd="incoming", mode="busy")
    rc, out, err = await run_agent_py(world.env, "dial", CALLER)
    assert rc == 1 and "busy" in err, (out, err)

    world.phone.send(cmd="incoming", mode="ignore")  # rings, nobody answers (4 s in the file)
    rc, out, err = await run_agent_py(world.env, "dial", CALLER)
    assert rc == 1 and "no answer" in err, (out, err)
    world.phone.send(cmd="incoming", mode="answer")


async def test_transfer_only_to_an_allowed_destination(world: SipWorld, script):
    since = len(world.stack.gemini.sessions)
    script.tool_call(2, "transfer_call", {"destination": "+15559999"})
    script.tool_call(3, "transfer_call", {"destination": "front desk"})
    world.phone.send(cmd="incoming", mode="answer")  # the desk (the same phone) answers
    m = await dial(world)
    await until(lambda: "Hello" in said(world.history(since), "model"), "the greeting")
    world.phone.send(cmd="dtmf", digits="1")
    refused = await until(lambda: tool_responses(world.history(since)), "the refused transfer")
    assert "not an allowed destination" in str(refused[0])
    assert not [e for e in world.phone.events[m:] if e["ev"] in ("transfer",) or e.get("state") == "DISCONNECTED"]
    world.phone.send(cmd="dtmf", digits="2")
    ev = await world.phone.wait_event(lambda e: e["ev"] == "transfer", since=m, timeout=60)
    assert ev["to"].strip("<>") == f"sip:desk@127.0.0.1:{world.phone.port}"
    # the call with the agent ends (BYE after the final NOTIFY); the desk got the caller
    first = next(e["call"] for e in world.phone.events[m:] if e["ev"] == "dialing")
    await world.phone.wait_event(lambda e: e["ev"] == "state" and e["call"] == first
                                 and e["state"] == "DISCONNECTED", since=m, timeout=60)
    assert any(e["ev"] == "incoming" and "desk@" in e["to"] for e in world.phone.events[m:])
    await hang_up(world, m)


@pytest.mark.parametrize("number, why", [(SHORT_CALL, "maximum call duration"), (SILENT_CALL, "silence timeout")])
async def test_call_limits_end_the_call_after_a_spoken_notice(world: SipWorld, script, number, why):
    """The dispatch rules of these numbers set a 7 s maximum duration / a 3 s silence timeout
    (their dispatch metadata); the phone only listens, and never hangs up itself."""
    script.reply(2, text="Sorry, this call has to end now. Goodbye.", audio=tone(NOTICE_HZ, 1.0))
    rec = world.tmp / f"limit-{number}.wav"
    m = await dial(world, number, record=str(rec))
    ended = await world.phone.wait_state("DISCONNECTED", since=m, timeout=60)  # the gateway's BYE
    await until(lambda: f"ending the call: {why}" in world.worker.log_tail(2000), f"the worker's '{why}' line", 10)
    heard = read_recording(rec)
    loud = np.nonzero(np.abs(heard) > 1000)[0]
    assert len(loud), "the phone heard nothing"
    # the greeting first, and the notice the last thing the phone heard before the BYE
    assert abs(dominant_frequency(heard[loud[0]: loud[0] + RATE], RATE) - GREETING_HZ) < 15
    assert abs(dominant_frequency(heard[max(loud[-1] - RATE // 2, 0): loud[-1]], RATE) - NOTICE_HZ) < 15, ended
