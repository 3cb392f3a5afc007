"""Issue 9: phone calls over SIP, beside WebRTC callers of the same run.

Latency: a real SIP phone (pjsua2, tests/sip/phone.py) calls the agent through the local
SIP gateway (devstack/sip); turns alternate with a WebRTC caller (the real rtc SDK) of the
same worker. From the end of the caller's speech to the first loud reply audio at the
caller (the phone: its last loud frame handed to pjsua's conference bridge -> its first
loud frame out of pjsua's jitter buffer), p50/p95, and the phone path split:

  phone -> gateway    the phone's last loud frame -> the gateway receiving its last loud RTP packet
  gateway in          -> that audio handed to the SIP participant's WebRTC source
  room + agent + model  -> the room's first loud reply audio at the gateway (the WebRTC
                        path's own hops: SFU, agent, model; as for a WebRTC caller)
  gateway out         -> the first loud RTP packet sent to the phone (8 kHz mix, 40 ms prefill, 20 ms pacing)
  gateway -> phone    -> the phone hearing it (RTP, pjsua's jitter buffer)

and what the agent adds on each path (its trace, as bench/agent_latency.py: room frame ->
model socket; model audio -> WebRTC sender, first frame of a reply) and the model's own
time (the offline server: last loud input chunk -> first loud reply chunk, including its
500 ms end-of-speech silence). The gateway is watched from outside its data path: this
script wraps a few of its methods (GatewayProbe).

Load: --calls phone calls at once (4 per pjsua2 process, so several processes, each with
RTP ports of its own) held for --seconds, against servers, gateway and worker in their own
processes; each call asks a sentence of its own at the start and another near the end
(then the bench waits up to 30 s for every call's reply). Figures: calls lost (a call that
ended before we hung up), the cores each process used, RTP packets per call each way as
the phones counted them (expected 50 per second) with losses and jitter, loud onsets heard
per call, and each call's recording correlated (phone-band envelope, as the tests) with its
own two sentences and, as the baseline, with every other call's: the audio reached the
right call, intact, after the hold.

    python bench/phone_calls.py [--turns 10] [--calls 8] [--seconds 60] [--no-latency] [--no-load]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import tempfile
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from _harness import (HEADSET, LOUD, ROOT, bench_stack, input_latencies, last_loud_offset, ms, output_latencies, pct,
                      ratio, server_audio_in, server_audio_out, peak, speech, summary, wait_flush,
                      wait_listening)

sys.path.insert(0, str(ROOT))
from devstack.sip import rtp as sip_rtp  # noqa: E402
from devstack.sip import room_leg as sip_room_leg  # noqa: E402
from tests.sip.client import PhoneProcess  # noqa: E402
from tests.support.audio import envelope_correlation, read_wav, write_wav  # noqa: E402

CALLED = "+15550100"
AGENT = "bench-tuned"
SENTENCE = "Could you tell me the weather for tomorrow?"
LOAD_SENTENCES = [
    "Please book a table for two at seven tonight.", "What time does the pharmacy close on Sunday?",
    "My parcel has not arrived yet, can you check it?", "I would like to change my flight to Friday morning.",
    "How much is a return ticket to the coast?", "Can you remind me to call my sister tomorrow?",
    "Is the swimming pool open during the holidays?", "I need a plumber, the kitchen sink is leaking.",
    "Tell me a short joke about elephants please.", "What is the balance on my savings account?",
    "Could you read me the news headlines?", "Where is the nearest charging station for my car?",
]
PHONE_RATE = 8000


def telephony_yaml() -> str:
    return f"""
inbound_trunks:
  - name: bench-inbound
    numbers: ["{CALLED}"]
    allowed_addresses: ["127.0.0.1/32"]
dispatch_rules:
  - name: bench-calls
    trunks: [bench-inbound]
    rule:
      dispatch_rule_individual: {{room_prefix: phone}}
    room_config:
      agents: [{{agent_name: {AGENT}}}]
"""


class GatewayProbe:
    """Times at the gateway, per call, from wrappers around its methods (the gateway runs in
    this process): loud RTP in, loud audio handed to the room, loud room audio arriving,
    loud RTP out. Onsets are loud frames after >= 0.3 s of quiet."""

    def __init__(self) -> None:
        self.last_loud_rtp_in: dict[int, float] = {}      # id(RtpSession) ->
        self.last_loud_to_room: dict[int, float] = {}     # id(AudioSource of a RoomLeg) ->
        self.room_onsets: dict[int, list[float]] = defaultdict(list)  # id(_TrackBuffer) ->
        self.rtp_onsets: dict[int, list[float]] = defaultdict(list)   # id(RoomLeg) ->
        self._quiet: dict[int, float] = {}
        self._undo: list = []

    def _onset(self, key: int, loud: bool, now: float, into: dict) -> None:
        if loud:
            if now - self._quiet.get(key, -1e9) >= 0.3:
                into[key].append(now)
            self._quiet[key] = now  # the key's last loud time

    def install(self) -> None:
        probe = self
        orig_rx, orig_pull = sip_rtp.RtpSession._received, sip_room_leg.RoomLeg.pull
        orig_push, orig_pump = sip_room_leg._TrackBuffer.push, sip_room_leg.RoomLeg._pump_phone_audio

        def received(self, data, addr):
            pkt = sip_rtp.parse_rtp(data)
            if pkt and pkt[0] in (0, 8):
                from devstack.sip import g711
                if int(np.abs(g711.decode(pkt[3], pkt[0]).astype(np.int32)).max()) >= LOUD:
                    probe.last_loud_rtp_in[id(self)] = time.monotonic()
            return orig_rx(self, data, addr)

        def pull(self):
            out = orig_pull(self)
            probe._onset(id(self), int(np.abs(out.astype(np.int32)).max()) >= LOUD, time.monotonic(), probe.rtp_onsets)
            return out

        def push(self, pcm):
            probe._onset(id(self), int(np.abs(pcm).max()) >= LOUD if len(pcm) else False, time.monotonic(),
                         probe.room_onsets)
            return orig_push(self, pcm)

        async def pump(self):
            capture = self.source.capture_frame

            async def timed(frame):
                await capture(frame)
                if peak(bytes(frame.data)) >= LOUD:
                    probe.last_loud_to_room[id(self)] = time.monotonic()

            self.source.capture_frame = timed
            return await orig_pump(self)

        sip_rtp.RtpSession._received = received
        sip_room_leg.RoomLeg.pull = pull
        sip_room_leg._TrackBuffer.push = push
        sip_room_leg.RoomLeg._pump_phone_audio = pump
        self._undo = [(sip_rtp.RtpSession, "_received", orig_rx), (sip_room_leg.RoomLeg, "pull", orig_pull),
                      (sip_room_leg._TrackBuffer, "push", orig_push),
                      (sip_room_leg.RoomLeg, "_pump_phone_audio", orig_pump)]

    def uninstall(self) -> None:
        for cls, name, fn in self._undo:
            setattr(cls, name, fn)


def gateway_call(gw, sip_call_id: str):
    return next((c for c in list(gw.calls.values()) if c.sip_call_id == sip_call_id), None)


async def dial(phone: PhoneProcess, gw, **media) -> tuple[int, object]:
    m = phone.mark()
    phone.send(cmd="dial", uri=f"sip:{CALLED}@{gw.address}", **media)
    ev = await phone.wait_state("CONFIRMED", since=m, timeout=60)
    call = gateway_call(gw, ev["sip_call_id"])
    assert call is not None, "the gateway does not know the phone's call"
    return ev["call"], call


async def wait_agent_listening(b, room: str, timeout: float = 60.0) -> None:
    from livekit import api

    lk = b.stack.livekit
    deadline = time.monotonic() + timeout
    async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                ps = (await client.room.list_participants(api.ListParticipantsRequest(room=room))).participants
                if any(p.attributes.get("lk.agent.state") == "listening" for p in ps):
                    await asyncio.sleep(0.5)
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"the agent never listened in {room}")


def model_time(session, since: float) -> float | None:
    """The offline server: last loud input chunk before its first loud reply chunk after `since`."""
    if session is None:
        return None
    out = [t for t, d in server_audio_out(session) if t >= since and peak(d) >= LOUD]
    if not out:
        return None
    ins = [t for t, d in server_audio_in(session) if since <= t <= out[0] and peak(d) >= LOUD]
    return out[0] - ins[-1] if ins else None


async def latency(b, args, probe: GatewayProbe) -> None:
    gw = b.stack.sip
    said8 = speech(SENTENCE, PHONE_RATE)
    said48 = speech(SENTENCE, 48000)
    wav = write_wav(b.workdir / "question.wav", np.concatenate([said8, np.zeros(PHONE_RATE // 5, np.int16)]), PHONE_RATE)
    phone = await PhoneProcess().start()
    t_start = time.monotonic()
    caller = await b.join("tuned")
    try:
        cid, call = await dial(phone, gw, line=True)
        await asyncio.gather(wait_listening(caller), wait_agent_listening(b, call.room_name))

        def model_session(phone_call: bool):
            """The latest offline-Gemini session of either call (a phone call's instructions say so)."""
            found = [s for s in b.stack.gemini.sessions if s.connected_at >= t_start and not s.closed.is_set()
                     and ("telephone call" in (s.conversation.system_instruction or "")) == phone_call]
            return found[-1] if found else None
        res = {k: [] for k in ("phone", "webrtc", "p_in", "p_gw_in", "p_room", "p_gw_out", "p_out",
                                "agent_in_phone", "agent_out_phone", "agent_in_webrtc", "agent_out_webrtc",
                                "model_phone", "model_webrtc")}
        missed = {"phone": 0, "webrtc": 0}
        tail48 = last_loud_offset(said48, 48000)
        print(f"{args.turns} turns per path, alternating; the offline model echoes the sentence "
              f"({len(said8) / PHONE_RATE:.1f} s)")
        for turn in range(args.turns):
            # --- the phone
            t0 = time.monotonic()
            m = phone.mark()
            phone.send(cmd="say", call=cid, wav=str(wav))
            try:
                spoken = (await phone.wait_event(lambda e: e["ev"] == "spoken", since=m, timeout=20))["t"]
                heard = (await phone.wait_event(lambda e: e["ev"] == "heard" and e["t"] > spoken, since=m,
                                                timeout=20))["t"]
            except AssertionError:
                missed["phone"] += 1
                heard = None
            if heard is not None:
                await asyncio.sleep(len(said8) / PHONE_RATE + 0.6)  # the reply plays out
                res["phone"].append(heard - spoken)
                rtp_in = probe.last_loud_rtp_in.get(id(call.rtp))
                to_room = probe.last_loud_to_room.get(id(call.leg))
                room_on = [t for buf in list(call.leg._buffers.values()) for t in probe.room_onsets[id(buf)]
                           if t > spoken]
                rtp_on = [t for t in probe.rtp_onsets[id(call.leg)] if t > spoken]
                if rtp_in and to_room and room_on and rtp_on:
                    res["p_in"].append(rtp_in - spoken)
                    res["p_gw_in"].append(to_room - rtp_in)
                    res["p_room"].append(min(room_on) - to_room)
                    res["p_gw_out"].append(min(rtp_on) - min(room_on))
                    res["p_out"].append(heard - min(rtp_on))
                tr = await wait_flush(b, "tuned", call.room_name, {"in", "sent", "model", "play"}, t0)
                res["agent_in_phone"] += input_latencies(tr, t0, spoken + 0.05)
                res["agent_out_phone"] += output_latencies(tr, spoken, time.monotonic())[1]
                if (mt := model_time(model_session(True), t0)) is not None:
                    res["model_phone"].append(mt)
            # --- the WebRTC caller
            t0 = time.monotonic()
            caller.say(said48)
            spoken = await caller.wait_spoken()
            try:
                await caller.wait_reply(spoken, quiet_s=0.4, timeout=20)
            except AssertionError:
                missed["webrtc"] += 1
                continue
            res["webrtc"].append(caller.heard.first_loud(spoken - tail48) - (spoken - tail48))
            tr = await wait_flush(b, "tuned", caller.room_name, {"in", "sent", "model", "play"}, t0)
            res["agent_in_webrtc"] += input_latencies(tr, t0, spoken + 0.05)
            res["agent_out_webrtc"] += output_latencies(tr, spoken, time.monotonic())[1]
            if (mt := model_time(model_session(False), t0)) is not None:
                res["model_webrtc"].append(mt)
            print(f"  turn {turn + 1}/{args.turns} done", end="\r", flush=True)
        print()
        phone.send(cmd="hangup")
    finally:
        await phone.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(caller.leave(), 5)
        b.callers.remove(caller)

    print("\nEnd of the caller's speech -> first reply audio at the caller")
    print(f"  phone (SIP)  {summary(res['phone'])}")
    print(f"  WebRTC       {summary(res['webrtc'])}")
    print(f"  ratio phone/WebRTC: p50 {ratio(pct(res['phone'], 50), pct(res['webrtc'], 50))}  "
          f"p95 {ratio(pct(res['phone'], 95), pct(res['webrtc'], 95))}   "
          f"phone - WebRTC at p50: {ms(pct(res['phone'], 50) - pct(res['webrtc'], 50))} ms")
    print(f"  turns without a reply: phone {missed['phone']}, WebRTC {missed['webrtc']}")
    print("The phone path, split (p50 / p95 ms):")
    for key, label in (("p_in", "phone -> gateway (RTP in)"), ("p_gw_in", "gateway in (RTP -> WebRTC source)"),
                       ("p_room", "room + agent + model (SFU, agent, model)"),
                       ("p_gw_out", "gateway out (room audio -> RTP out)"),
                       ("p_out", "gateway -> phone (RTP, pjsua jitter buffer)")):
        print(f"  {label:46s} {ms(pct(res[key], 50))} / {ms(pct(res[key], 95))}")
    gw_adds = [a + c for a, c in zip(res["p_gw_in"], res["p_gw_out"])]
    print(f"  the gateway adds (in + out)                    {ms(pct(gw_adds, 50))} / {ms(pct(gw_adds, 95))}")
    print("What the agent adds (its trace) and the model's own time (p50 / p95 ms):")
    for path in ("phone", "webrtc"):
        print(f"  {path:7s} agent input {ms(pct(res['agent_in_' + path], 50))} / {ms(pct(res['agent_in_' + path], 95))}"
              f"   agent output (first frame) {ms(pct(res['agent_out_' + path], 50))} / "
              f"{ms(pct(res['agent_out_' + path], 95))}   model {ms(pct(res['model_' + path], 50))} / "
              f"{ms(pct(res['model_' + path], 95))}")


@contextlib.asynccontextmanager
async def own_process_stack(workdir: Path, n_calls: int):
    """The local LiveKit server with its SIP gateway, and the offline Gemini server, each in a
    process of its own (as bench/capacity.py runs them: with 8 calls, one process holding
    both servers, the gateway and the bench falls behind real time), a provisioned
    telephony file and one worker. Yields (environment, the gateway's host:port)."""
    from capacity import start_servers
    from devstack.stack import WorkerProcess

    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    base["PYTHONPATH"] = str(ROOT)
    from capacity import ServerProcess

    servers, env = await start_servers(workdir, base)
    worker = None
    try:
        # the SIP gateway in a process of its own, as livekit-sip beside livekit-server
        servers["sip"] = ServerProcess("sip", ["-m", "devstack.sip", "--livekit", env["LIVEKIT_URL"], "--api-key",
                                               env["LIVEKIT_API_KEY"], "--api-secret", env["LIVEKIT_API_SECRET"],
                                               "--port", "0"], workdir / "sip.log", base)
        sip_address = re.search(r"sip=(\S+)", await servers["sip"].start()).group(1)
        tel = workdir / "sip.yaml"
        tel.write_text(telephony_yaml())
        env = {**env, "AGENT_PHONE__TELEPHONY_FILE": str(tel)}
        prov = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "agent.py"), "sip", "provision", cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL,
            env={**env, "LIVEKIT_URL": env["LIVEKIT_URL"].replace("ws", "http", 1)})
        if await prov.wait():
            raise SystemExit("agent.py sip provision failed")
        wenv = {**env, **HEADSET, **worker_env(tel, n_calls), "AGENT_WORKER__HTTP_PORT": "0",
                "AGENT_OBSERVABILITY__METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
        log = workdir / "worker.log"
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "agent.py"), "start", cwd=str(ROOT), env=wenv, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(proc, log, wenv)
        deadline = time.monotonic() + 90
        while "registered worker" not in worker.log_tail(400):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{worker.log_tail()}")
            await asyncio.sleep(0.2)
        yield env, sip_address, {"livekit": servers["livekit"].proc.pid, "SIP gateway": servers["sip"].proc.pid,
                                 "offline Gemini": servers["gemini"].proc.pid, "agent worker": proc.pid}
    finally:
        if worker is not None:
            await worker.stop()
        for s in servers.values():
            await s.stop()


async def load(workdir: Path, args) -> None:
    n = args.calls
    async with own_process_stack(workdir, n) as (env, sip_address, pids):
        lk = (env["LIVEKIT_URL"].replace("ws", "http", 1), env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        report = await load_calls(workdir, args, lk, sip_address, pids)
    report()  # the correlations take CPU: after the servers are gone




def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (a worker's job processes)."""
    import psutil

    total = 0.0
    try:
        p = psutil.Process(pid)
        for q in [p, *p.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = q.cpu_times()
                total += t.user + t.system
    except psutil.Error:
        pass
    return total


async def load_calls(workdir: Path, args, lk: tuple[str, str, str], sip_address: str, pids: dict):
    n = args.calls
    phones = [await PhoneProcess(media_port=42000 + 1000 * k).start() for k in range(math.ceil(n / 4))]
    sentences = [(LOAD_SENTENCES[i % len(LOAD_SENTENCES)], LOAD_SENTENCES[(i + n) % len(LOAD_SENTENCES)])
                 for i in range(n)]
    first = {i: speech(s[0], PHONE_RATE) for i, s in enumerate(sentences)}
    last = {i: speech(s[1], PHONE_RATE) for i, s in enumerate(sentences)}
    calls = []  # (phone, phone call id, room, recording, mark)
    print(f"\n{n} phone calls at once from {len(phones)} pjsua2 processes, held {args.seconds:.0f} s "
          "(servers, gateway and worker in their own processes)")
    try:
        from livekit import api

        async with api.LiveKitAPI(*lk) as client:
            for i in range(n):
                phone = phones[i // 4]
                rec = workdir / f"load-{i}.wav"
                m = phone.mark()
                phone.send(cmd="dial", uri=f"sip:{CALLED}@{sip_address}", line=True, record=str(rec))
                ev = await phone.wait_state("CONFIRMED", since=m, timeout=60)
                calls.append((phone, ev["call"], rec, m))
            t_up = time.monotonic()
            while True:  # every call's agent listening
                rooms = (await client.room.list_rooms(api.ListRoomsRequest())).rooms
                listening = 0
                for r in rooms:
                    ps = (await client.room.list_participants(api.ListParticipantsRequest(room=r.name))).participants
                    listening += any(p.attributes.get("lk.agent.state") == "listening" for p in ps)
                if listening >= n:
                    break
                if time.monotonic() - t_up > 120:
                    raise SystemExit(f"only {listening} of {n} calls have a listening agent")
                await asyncio.sleep(0.5)
        print(f"  all {n} calls up, agents listening after {time.monotonic() - t_up:.1f} s")
        stats0 = await phone_stats(phones)
        pids = {**pids, "pjsua2 phones": None}
        cpu0 = {k: cpu_seconds(v) if v else sum(cpu_seconds(ph.proc.pid) for ph in phones) for k, v in pids.items()}
        t_hold = time.monotonic()
        for i, (phone, cid, _rec, _m) in enumerate(calls):
            phone.send(cmd="say", call=cid, wav=str(write_wav(workdir / f"q1-{i}.wav", first[i], PHONE_RATE)))
            await asyncio.sleep(0.3)  # the calls' questions out of phase
        await asyncio.sleep(max(0.0, args.seconds - (time.monotonic() - t_hold) - 8.0))
        t_q2 = time.monotonic()
        for i, (phone, cid, _rec, _m) in enumerate(calls):
            phone.send(cmd="say", call=cid, wav=str(write_wav(workdir / f"q2-{i}.wav", last[i], PHONE_RATE)))
            await asyncio.sleep(0.3)

        def answered(phone, cid) -> bool:  # heard something after its second question was spoken
            spoken = [e["t"] for e in phone.events if e["ev"] == "spoken" and e["call"] == cid and e["t"] >= t_q2]
            return bool(spoken) and any(e["ev"] == "heard" and e["call"] == cid and e["t"] > spoken[-1]
                                        for e in phone.events)

        deadline = time.monotonic() + 30
        while not all(answered(p, c) for p, c, _r, _m in calls) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(max(4.0, args.seconds - (time.monotonic() - t_hold)))  # the replies play out
        held = time.monotonic() - t_hold
        stats1 = await phone_stats(phones)
        cpu1 = {k: cpu_seconds(v) if v else sum(cpu_seconds(ph.proc.pid) for ph in phones) for k, v in pids.items()}
        lost = [i for i, (phone, cid, _r, m) in enumerate(calls)
                if any(e["ev"] == "state" and e["call"] == cid and e["state"] == "DISCONNECTED" for e in phone.events[m:])]
        for phone in phones:
            phone.send(cmd="hangup")
        for phone, cid, _r, m in calls:
            await phone.wait_state("DISCONNECTED", since=m, timeout=30)
    finally:
        for phone in phones:
            await phone.stop()

    print(f"  calls lost during the hold: {len(lost)} of {n} {lost or ''}")
    print("  cores used during the hold: " + ", ".join(f"{k} {(cpu1[k] - cpu0[k]) / held:.2f}" for k in cpu0)
          + f" (the machine has {os.cpu_count()})")
    rx, tx, loss, jit = [], [], [], []
    for phone, cid, _r, _m in calls:
        a, b = stats0.get((id(phone), cid)), stats1.get((id(phone), cid))
        if a and b:
            rx.append(b["rx"] - a["rx"])
            tx.append(b["tx"] - a["tx"])
            loss.append(b["lost"] - a["lost"])
            jit.append(b["jitter_max_ms"])
    if rx:
        print(f"  RTP at the phones over {held:.0f} s (expected {held * 50:.0f} packets each way): received "
              f"min {min(rx)} max {max(rx)}, sent min {min(tx)} max {max(tx)}, lost {sum(loss)} in all, "
              f"largest jitter {max(jit):.1f} ms")
    heard = [sum(1 for e in phone.events[m:] if e["ev"] == "heard" and e["call"] == cid and e["t"] >= t_hold)
             for phone, cid, _r, m in calls]
    print(f"  replies heard per call during the hold (loud onsets at the phone; 2 questions each): {heard}")
    return lambda: correlations(calls, first, last)


def correlations(calls: list, first: dict, last: dict) -> None:
    n = len(calls)
    own, own1, own2, other = [], [], [], []
    for i, (_p, _cid, rec, _m) in enumerate(calls):
        heard, _ = read_wav(rec)
        own1.append(envelope_correlation(first[i], heard, PHONE_RATE))
        own2.append(envelope_correlation(last[i], heard, PHONE_RATE))
        own.append(min(own1[-1], own2[-1]))
        other.append(max(envelope_correlation(s, heard, PHONE_RATE)
                         for j in range(n) if j != i for s in (first[j], last[j])))
    print("  each call's recording against its own first and last sentence (the last shows the audio")
    print("  intact after the hold) and, as the baseline, against every other call's sentences (the")
    print("  best of them); envelope correlation in the phone band:")
    print("    first " + " ".join(f"{x:.2f}" for x in own1))
    print("    last  " + " ".join(f"{x:.2f}" for x in own2))
    print("    other " + " ".join(f"{x:.2f}" for x in other))
    print(f"  calls whose recording matches both their own sentences better than any other call's: "
          f"{sum(o > x for o, x in zip(own, other))} of {n}; own >= 0.8 (the tests' bar): {sum(o >= 0.8 for o in own)}")


async def phone_stats(phones: list[PhoneProcess]) -> dict[tuple[int, int], dict]:
    out = {}
    for phone in phones:
        m = phone.mark()
        phone.send(cmd="stats")
        await asyncio.sleep(0.5)
        for e in phone.events[m:]:
            if e["ev"] == "stats":
                out[(id(phone), e["call"])] = e
    return out


def worker_env(tel: Path, n_calls: int) -> dict[str, str]:
    return {"AGENT_AGENT__NAME": AGENT, "AGENT_LATENCY__MODE": "low", "AGENT_AGENT__GREET": "false",
            "AGENT_PHONE__TELEPHONY_FILE": str(tel), "AGENT_PHONE__SILENCE_TIMEOUT_S": "0",
            # calls, not the shared machine's CPU, decide the worker's load: all calls dispatched
            "AGENT_WORKER__MAX_CALLS": str(max(4 * n_calls, 20)), "AGENT_WORKER__NUM_IDLE_PROCESSES": "2"}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the simultaneous calls are held")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-load", action="store_true")
    args = ap.parse_args()
    if args.seconds < 20:
        raise SystemExit("--seconds: at least 20 (a question at the start, one at the end)")

    if not args.no_latency:
        await latency_run(args)
    if not args.no_load:
        await load(Path(tempfile.mkdtemp(prefix="phonebench-load-")), args)


async def latency_run(args) -> None:
    probe = GatewayProbe()
    probe.install()
    try:
        async with bench_stack("bench-phone", sip_port=0) as b:
            tel = b.workdir / "sip.yaml"
            tel.write_text(telephony_yaml())
            env = {**b.stack.env(), "PYTHONPATH": str(ROOT), "AGENT_PHONE__TELEPHONY_FILE": str(tel),
                   "LIVEKIT_URL": b.stack.livekit.http_url}
            prov = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "agent.py"), "sip", "provision",
                                                        env=env, cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL)
            if await prov.wait():
                raise SystemExit("agent.py sip provision failed")
            await b.start_worker("tuned", worker_env(tel, 1))
            await latency(b, args, probe)
    finally:
        probe.uninstall()


if __name__ == "__main__":
    asyncio.run(main())
