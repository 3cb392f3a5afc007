"""The SIP gateway's answers to bad INVITEs (what a carrier expects), G.711, and
`python agent.py sip provision` against the local LiveKit server's SIP service."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import socket
import warnings

import numpy as np
import pytest
from livekit import api

from devstack.sip import g711
from devstack.stack import ROOT
from devstack.sip.message import parse

from ..support.audio import dominant_frequency
from .client import PhoneProcess
from .conftest import (CALLED, CALLER, PIN_CALL, ROOM_PIN, SECURED_CALL, TRUNK_PASSWORD, TRUNK_USER, SipWorld,
                       _free_udp_port, read_recording, run_agent_py, telephony_yaml)

pytestmark = pytest.mark.asyncio(loop_scope="package")


def test_g711_tables_match_audioop_byte_for_byte():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    every = bytes(range(256))
    assert g711.encode(pcm, g711.PCMU) == audioop.lin2ulaw(pcm.tobytes(), 2)
    assert g711.encode(pcm, g711.PCMA) == audioop.lin2alaw(pcm.tobytes(), 2)
    assert g711.decode(every, g711.PCMU).tobytes() == audioop.ulaw2lin(every, 2)
    assert g711.decode(every, g711.PCMA).tobytes() == audioop.alaw2lin(every, 2)


def invite(gw: str, *, to: str = CALLED, codecs: str = "0 8 101", call_id: str = "bad-1", drop: str = "") -> bytes:
    sdp = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio 49170 RTP/AVP {codecs}\r\na=rtpmap:101 telephone-event/8000\r\n")
    headers = [
        f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{call_id}", "Max-Forwards: 70",
        "From: <sip:+15550999@127.0.0.1>;tag=abc", f"To: <sip:{to}@{gw}>", f"Call-ID: {call_id}",
        "CSeq: 1 INVITE", "Contact: <sip:+15550999@127.0.0.1:5099>", "Content-Type: application/sdp",
        f"Content-Length: {len(sdp)}",
    ]
    headers = [h for h in headers if not (drop and h.startswith(drop))]
    return ("INVITE sip:%s@%s SIP/2.0\r\n" % (to, gw) + "\r\n".join(headers) + "\r\n\r\n" + sdp).encode()


def sip_caller(people: list) -> api.ParticipantInfo:
    """The one participant of kind SIP among a room's participants."""
    [caller] = [p for p in people if p.kind == api.ParticipantInfo.SIP]
    return caller


async def exchange(gw_addr: tuple[str, int], data: bytes, *, source: str = "127.0.0.1",
                   timeout: float = 3.0) -> list:
    """Send one datagram from `source`; the final responses that come back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    sock.sendto(data, gw_addr)
    out = []
    try:
        while True:
            msg = parse(await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout))
            out.append(msg)
            if msg.status >= 200:
                return out
    except asyncio.TimeoutError:
        return out
    finally:
        sock.close()


async def test_bad_invites_get_the_answers_a_carrier_expects(world: SipWorld):
    gw = world.gateway
    addr = (gw.host, gw.port)
    # a number no trunk takes
    r = await exchange(addr, invite(gw.address, to="+15550777", call_id="b1"))
    assert (r[-1].status, r[-1].reason) == (404, "Does not match any SIP Trunks")
    # the right number from an address the trunk does not allow (127.0.0.2 is loopback too)
    r = await exchange(addr, invite(gw.address, call_id="b2"), source="127.0.0.2")
    assert (r[-1].status, r[-1].reason) == (404, "Does not match any SIP Trunks")
    # no codec in common (G.722 only)
    r = await exchange(addr, invite(gw.address, codecs="9", call_id="b3"))
    assert r[-1].status == 488
    # malformed: no Call-ID, a mangled CSeq, and bytes that are not SIP at all
    r = await exchange(addr, invite(gw.address, call_id="b4", drop="Call-ID"))
    assert r[-1].status == 400 and "Call-ID" in r[-1].reason
    r = await exchange(addr, invite(gw.address, call_id="b5").replace(b"CSeq: 1 INVITE", b"CSeq: one"))
    assert r[-1].status == 400 and "CSeq" in r[-1].reason
    assert await exchange(addr, b"\x00\x01garbage\r\n\r\n", timeout=1.0) == []
    # a BYE for no call
    bye = invite(gw.address, call_id="b6").replace(b"INVITE sip", b"BYE sip").replace(b"1 INVITE", b"2 BYE")
    assert (await exchange(addr, bye))[-1].status == 481
    # and the gateway still serves: OPTIONS is answered, no call was left behind
    options = invite(gw.address, call_id="b7").replace(b"INVITE sip", b"OPTIONS sip").replace(b"1 INVITE", b"1 OPTIONS")
    r = await exchange(addr, options)
    assert r[-1].status == 200 and "INVITE" in r[-1].get("Allow")
    assert not gw.calls
    assert [s for s, _ in gw.rejected[-3:]] == [404, 404, 488]


async def test_a_trunk_with_credentials_lets_in_only_a_phone_that_knows_them(world: SipWorld):
    gw = world.gateway
    # no credentials: the digest challenge livekit-sip sends
    r = await exchange((gw.host, gw.port), invite(gw.address, to=SECURED_CALL, call_id="auth-1"))
    assert r[-1].status == 407
    challenge = r[-1].get("Proxy-Authenticate")
    assert challenge.startswith("Digest ") and 'realm="LiveKit"' in challenge and "algorithm=MD5" in challenge
    assert not gw.calls

    # a phone of its own: after the shared phone had logged in here, its later calls
    # sometimes got no answer at all (stuck in CALLING; the cause is not established)
    phone = await PhoneProcess(_free_udp_port(), media_port=44000).start()
    try:
        # a real phone answers the challenge: with a wrong password it is refused
        phone.send(cmd="login", user=TRUNK_USER, password="not-" + TRUNK_PASSWORD)
        m = phone.mark()
        phone.send(cmd="dial", uri=world.uri_of(SECURED_CALL))
        refused = await phone.wait_state("DISCONNECTED", since=m)
        assert refused["code"] == 401 and gw.rejected[-1] == (401, "Unauthorized")

        # with the right one it is put through, into a room of the trunk's rule
        phone.send(cmd="login", user=TRUNK_USER, password=TRUNK_PASSWORD)
        m = phone.mark()
        phone.send(cmd="dial", uri=world.uri_of(SECURED_CALL))
        answered = await phone.wait_state("CONFIRMED", since=m)
        call = next(c for c in gw.calls.values() if c.sip_call_id == answered["sip_call_id"])
        async with world.api() as lk:
            trunks = (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
        secured = next(t for t in trunks if t.name == "test-secured")
        caller = sip_caller((await world.rooms())[call.room_name])
        assert caller.identity == f"sip_{CALLER}" and caller.attributes["sip.trunkID"] == secured.sip_trunk_id
        phone.send(cmd="hangup")
        await phone.wait_state("DISCONNECTED", since=m)
    finally:
        await phone.stop()


def loud_parts(pcm: np.ndarray, rate: int = 8000) -> list[np.ndarray]:
    """The stretches of a recording louder than a quiet line, split at 50 ms of quiet."""
    win = rate // 100
    loud = [int(np.abs(pcm[i:i + win].astype(np.int32)).max(initial=0)) > 2000 for i in range(0, len(pcm), win)]
    parts, start, quiet = [], None, 0
    for k, is_loud in enumerate(loud + [False] * 6):
        if is_loud:
            start, quiet = (k if start is None else start), 0
        elif start is not None:
            quiet += 1
            if quiet >= 5:
                parts.append(pcm[start * win:(k - quiet + 1) * win])
                start, quiet = None, 0
    return parts


def pitches(parts: list[np.ndarray]) -> list[float]:
    """Each part's pitch from its first 150 ms (the join beep runs into the agent's greeting)."""
    return [dominant_frequency(p[:1200], 8000) for p in parts]


def near(found: list[float], wanted: list[int], within: float = 20.0) -> bool:
    return len(found) == len(wanted) and all(abs(f - w) < within for f, w in zip(found, wanted))


async def pin_call(world: SipWorld, digits: str, record) -> tuple[int, dict]:
    """Dial the PIN rule's number and, once the prompt has played, type `digits`."""
    m = world.phone.mark()
    world.phone.send(cmd="dial", uri=world.uri_of(PIN_CALL), record=str(record))
    answered = await world.phone.wait_state("CONFIRMED", since=m)
    await asyncio.sleep(1.0)  # the prompt plays
    world.phone.send(cmd="dtmf", call=answered["call"], digits=digits)
    return m, answered


async def test_a_rule_with_a_pin_asks_for_it_and_takes_only_the_right_one(world: SipWorld):
    phone = world.phone
    async with world.api() as lk:
        [rule] = [r for r in (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
                  if r.name == "test-pin-calls"]

    async def pin_rooms() -> dict[str, list]:
        return {name: people for name, people in (await world.rooms()).items() if name.startswith("pin_")}

    try:
        # a wrong PIN: the prompt's two beeps, the wrong-PIN tone, and the gateway hangs up
        m, _ = await pin_call(world, "1111#", world.tmp / "pin-wrong.wav")
        await phone.wait_state("DISCONNECTED", since=m, timeout=15)
        parts = loud_parts(read_recording(world.tmp / "pin-wrong.wav"))
        assert near(pitches(parts), [440, 440, 300]), pitches(parts)
        assert await pin_rooms() == {}

        # the right PIN: the caller joins the room of the PIN's rule
        m, answered = await pin_call(world, ROOM_PIN + "#", world.tmp / "pin-right.wav")
        for _ in range(100):
            if rooms := await pin_rooms():
                break
            await asyncio.sleep(0.1)
        [people] = rooms.values()
        caller = sip_caller(people)
        assert caller.identity == f"sip_{CALLER}" and caller.attributes["sip.ruleID"] == rule.sip_dispatch_rule_id
        phone.send(cmd="hangup")
        await phone.wait_state("DISCONNECTED", since=m)
        # it heard the prompt, then the join beep
        parts = loud_parts(read_recording(world.tmp / "pin-right.wav"))
        assert near(pitches(parts[:3]), [440, 440, 660]), pitches(parts)
    finally:
        await phone.idle()


async def test_the_gateway_in_a_process_of_its_own_routes_by_the_servers_trunks_and_rules(world: SipWorld):
    """`python -m devstack.sip` (bench/phone_calls.py's load runs use it): the same
    gateway beside the LiveKit server, reading its trunks and rules over the SIP API."""
    lk = world.stack.livekit
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack.sip", "--livekit", lk.url, "--api-key", lk.api_key,
        "--api-secret", lk.api_secret, "--port", "0", cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        ready = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        address = re.search(r"local-sip ready sip=(\S+)", ready).group(1)
        host, port = address.rsplit(":", 1)
        r = await exchange((host, int(port)), invite(address, to="+15550777", call_id="own-1"))
        assert (r[-1].status, r[-1].reason) == (404, "Does not match any SIP Trunks")

        before = set(await world.rooms())
        # the provisioned number: answered once the caller is in a room of the rule
        r = await exchange((host, int(port)), invite(address, call_id="own-2"), timeout=20)
        assert r[-1].status == 200 and b"m=audio" in r[-1].body
        [(room, people)] = [(name, people) for name, people in (await world.rooms()).items() if name not in before]
        async with world.api() as client:
            [trunk] = [t for t in (await client.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
                       if t.name == "test-inbound"]
            caller = sip_caller(people)
            assert caller.identity == "sip_+15550999" and caller.attributes["sip.trunkID"] == trunk.sip_trunk_id
            assert not world.gateway.calls  # the call is the other gateway's
            await client.room.delete_room(api.DeleteRoomRequest(room=room))
    finally:
        proc.terminate()
        await proc.wait()


async def test_provisioning_is_idempotent_and_updates_in_place(world: SipWorld):
    # the fixture provisioned once: everything was created, and a second run changes nothing
    assert "create inbound trunk 'test-inbound'" in world.provisioned
    assert "create dispatch rule 'test-calls'" in world.provisioned
    rc, out, err = await run_agent_py(world.env, "sip", "provision")
    assert rc == 0, err
    assert out.startswith("nothing to change"), out

    async with world.api() as lk:
        before = next(r for r in (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
                      if r.name == "test-calls")
    # every agent a rule dispatches is told in its metadata that the job is a phone call
    # (agents/telephony/dispatch.py), next to the rule's own metadata
    assert json.loads(before.room_config.agents[0].metadata) == {"call": "phone"}
    world.telephony_file.write_text(telephony_yaml(world.phone.port, room_prefix="phone"))
    try:
        rc, out, err = await run_agent_py(world.env, "sip", "provision", "--dry-run")
        assert rc == 0 and out.strip() == f"would update dispatch rule 'test-calls' ({before.sip_dispatch_rule_id}): rule"
        rc, out, err = await run_agent_py(world.env, "sip", "provision")
        assert rc == 0 and out.strip() == f"update dispatch rule 'test-calls' ({before.sip_dispatch_rule_id}): rule"
        async with world.api() as lk:
            after = (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
        assert len(after) == 4
        after = next(r for r in after if r.name == "test-calls")
        assert after.sip_dispatch_rule_id == before.sip_dispatch_rule_id
        assert after.rule.dispatch_rule_individual.room_prefix == "phone"
    finally:
        world.telephony_file.write_text(telephony_yaml(world.phone.port))
        rc, out, err = await run_agent_py(world.env, "sip", "provision")
        assert rc == 0, err

    rc, out, err = await run_agent_py(world.env, "sip", "list")
    assert rc == 0 and "'test-inbound'" in out and "agents=['gemini-agent']" in out


async def test_a_malformed_telephony_file_is_one_clear_error(world: SipWorld):
    bad = world.tmp / "bad-sip.yaml"
    bad.write_text(telephony_yaml(world.phone.port).replace('numbers: ["+15550100"]\n    allowed',
                                                             'numbers: ["call me"]\n    allowed'))
    rc, out, err = await run_agent_py(world.env, "sip", "provision", "--file", str(bad))
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(bad) in lines[0] and "inbound_trunks[0].numbers[0] = 'call me'" in lines[0]
    bad.write_text(telephony_yaml(world.phone.port).replace("trunks: [test-inbound,", "trunks: [nope,"))
    rc, out, err = await run_agent_py(world.env, "sip", "provision", "--file", str(bad))
    assert rc == 2 and "dispatch_rules[0].trunks: 'nope' is not the name of an inbound trunk" in err
