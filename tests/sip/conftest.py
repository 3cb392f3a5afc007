"""Phone calls end to end: the local LiveKit server with its SIP gateway, the offline
Gemini server, a real `python agent.py start` worker, telephony provisioned from a
telephony file by `python agent.py sip provision`, and a real SIP phone (pjsua2, in its
own process). One of each for the whole package, shared by its tests."""

from __future__ import annotations

import asyncio
import os
import sys
import wave
from pathlib import Path

import numpy as np
import pytest_asyncio
from livekit import api

from devstack.stack import ROOT, LocalStack

from .client import PhoneProcess

CALLED = "+15550100"   # the number the phone dials (the inbound trunk's)
CALLER = "+15550123"   # the phone's own number
# numbers whose dispatch rules give their calls phone settings of their own (the dispatch
# metadata, agents/telephony/dispatch.py): a short maximum duration, a short silence timeout
SHORT_CALL = "+15550101"
SILENT_CALL = "+15550102"
SECURED_CALL = "+15550103"  # a trunk with credentials: digest authentication at the gateway
TRUNK_USER, TRUNK_PASSWORD = "carrier-7", "s3cret-trunk"
PIN_CALL, ROOM_PIN = "+15550104", "4321"  # a rule that asks the caller for a PIN

PHONE_AGENT_ENV = {
    "AGENT_AUDIO__AUTO_GAIN_CONTROL": "false",
    "AGENT_PHONE__SILENCE_TIMEOUT_S": "0",
}


def telephony_yaml(phone_port: int, *, room_prefix: str = "call", ringing_s: float = 4) -> str:
    return f"""
inbound_trunks:
  - name: test-inbound
    numbers: ["{CALLED}"]
    allowed_addresses: ["127.0.0.1/32"]
  - name: test-limits
    numbers: ["{SHORT_CALL}", "{SILENT_CALL}"]
    allowed_addresses: ["127.0.0.1/32"]
  - name: test-secured
    numbers: ["{SECURED_CALL}"]
    auth_username: {TRUNK_USER}
    auth_password: {TRUNK_PASSWORD}
  - name: test-pin
    numbers: ["{PIN_CALL}"]
    allowed_addresses: ["127.0.0.1/32"]
dispatch_rules:
  - name: test-calls
    trunks: [test-inbound, test-secured]
    rule:
      dispatch_rule_individual: {{room_prefix: {room_prefix}}}
    room_config:
      agents: [{{agent_name: gemini-agent}}]
  - name: test-short-calls
    trunks: [test-limits]
    numbers: ["{SHORT_CALL}"]
    rule:
      dispatch_rule_individual: {{room_prefix: short}}
    room_config:
      agents: [{{agent_name: gemini-agent, metadata: '{{"phone": {{"max_call_duration_s": 7}}}}'}}]
  - name: test-silent-calls
    trunks: [test-limits]
    numbers: ["{SILENT_CALL}"]
    rule:
      dispatch_rule_individual: {{room_prefix: silent}}
    room_config:
      agents: [{{agent_name: gemini-agent, metadata: '{{"phone": {{"silence_timeout_s": 3}}}}'}}]
  - name: test-pin-calls
    trunks: [test-pin]
    rule:
      dispatch_rule_individual: {{room_prefix: pin, pin: "{ROOM_PIN}"}}
    room_config:
      agents: [{{agent_name: gemini-agent}}]
outbound_trunks:
  - name: test-outbound
    address: 127.0.0.1:{phone_port}
    numbers: ["{CALLED}"]
dial:
  outbound_trunk: test-outbound
  ringing_timeout_s: {ringing_s}
transfer_destinations:
  - name: front desk
    uri: sip:desk@127.0.0.1:{phone_port}
"""


async def run_agent_py(env: dict, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "agent.py"), *args, cwd=str(ROOT), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def read_recording(path: Path, timeout: float = 10.0) -> np.ndarray:
    """A phone recording; pjsua writes its WAV header when the recorder closes, which can
    come a moment after the call's DISCONNECTED."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with wave.open(str(path), "rb") as w:
                return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        except (wave.Error, EOFError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SipWorld:
    """Everything a phone test needs."""

    def __init__(self, stack: LocalStack, phone: PhoneProcess, tmp: Path, env: dict) -> None:
        self.stack, self.phone, self.tmp, self.env = stack, phone, tmp, env
        self.telephony_file = tmp / "sip.yaml"

    @property
    def gateway(self):
        return self.stack.sip

    @property
    def uri(self) -> str:
        return self.uri_of(CALLED)

    def uri_of(self, number: str) -> str:
        return f"sip:{number}@{self.gateway.address}"

    def api(self) -> api.LiveKitAPI:
        lk = self.stack.livekit
        return api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret)

    async def rooms(self) -> dict[str, list]:
        """Each room's name and its participants."""
        async with self.api() as lk:
            out = {}
            for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
                out[r.name] = list((await lk.room.list_participants(api.ListParticipantsRequest(room=r.name))).participants)
            return out

    def gemini_sessions(self, since: int) -> list:
        return self.stack.gemini.sessions[since:]

    def history(self, since: int) -> list[dict]:
        """What the model received and said in the conversations started since `since`."""
        seen, out = set(), []
        for s in self.gemini_sessions(since):
            if id(s.conversation) not in seen:
                seen.add(id(s.conversation))
                out += s.conversation.history
        return out


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sip")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    async with LocalStack(workdir=tmp / "stack", base_env=base, sip_port=0) as stack:
        phone = await PhoneProcess(_free_udp_port()).start()
        try:
            w = SipWorld(stack, phone, tmp, {})
            w.telephony_file.write_text(telephony_yaml(phone.port))
            w.env = {**stack.env(), "PYTHONPATH": str(ROOT), "AGENT_PHONE__TELEPHONY_FILE": str(w.telephony_file)}
            w.env["LIVEKIT_URL"] = stack.livekit.http_url
            rc, out, err = await run_agent_py(w.env, "sip", "provision")
            assert rc == 0, err
            w.provisioned = out
            worker_env = {**PHONE_AGENT_ENV, "AGENT_PHONE__TELEPHONY_FILE": str(w.telephony_file)}
            w.worker = await stack.start_worker(worker_env)
            yield w
        finally:
            await w.phone.stop()
