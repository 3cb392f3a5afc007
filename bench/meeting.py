"""Meetings: the cost of hearing several people, beside a one-to-one call in the same run.

    python bench/meeting.py [--turns 6] [--people 2,4,8] [--window 20]

1. Speaker switch: each turn another person starts speaking; from the moment their first
   speech frame goes out of their microphone to the first loud audio of it reaching the
   model (the offline Gemini server's receive time; one CLOCK_MONOTONIC for all), p50/p95,
   beside the same sentences from one caller in a one-to-one call. Speech lost at a switch:
   how much shorter the turn the model heard is than the sentence said (0 = every word).
2. CPU per meeting-minute of the agent worker (its whole process tree) with 2, 4 and 8
   people taking turns, against a one-to-one call doing the same turns.

The worker runs `meeting.reply_policy: always`, so every turn is answered in both the
meeting and the one-to-one call and they do the same model work. The machine is shared:
figures move between runs; compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

import numpy as np
import psutil

from _harness import LOUD, Bench, bench_stack, pct, ratio, speech, summary, wait_listening
from livekit import rtc

from tests.support.caller import Caller, caller_token

SENTENCES = [
    "What is the weather like in Paris today?",
    "Could you remind me of the next meeting?",
    "How many days are left until Friday?",
    "Please read the last line of the agenda again.",
]
AGENT = "meeting"


def worker_cpu_s(pid: int) -> float:
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


class Person(Caller):
    """Hears only the agent: subscribes to nobody else's microphone, so a meeting of n costs
    the local SFU and this process n forwarded tracks, not n * n (with 8 people the n * n
    load on the shared machine broke the agent's WebRTC connection)."""

    subscribe_to_people = False

    def _on_track(self, track: rtc.Track, pub, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            super()._on_track(track, pub, participant)


async def join_room(b: Bench, n: int, attempts: int = 3) -> list:
    """n people in a new room with the agent listening. A worker on a saturated machine
    flips between full and available, and LiveKit drops a room's dispatch when no worker is
    available at that moment: then the people leave and try a new room."""
    for attempt in range(attempts):
        room = f"bench-meeting-{n}-{time.monotonic_ns()}"
        deadline = time.monotonic() + 120
        while not any(w.available and w.agent_name == f"bench-{AGENT}"
                      for w in b.stack.livekit.workers.workers.values()):
            if time.monotonic() > deadline:
                raise SystemExit("the agent worker stayed full for 2 minutes (machine saturated)")
            await asyncio.sleep(0.2)
        people = []
        for i in range(n):
            p = Person(f"p{i}")
            token = caller_token(b.stack.livekit.api_key, b.stack.livekit.api_secret, room,
                                 p.identity, agent_name=f"bench-{AGENT}")
            await p.join(b.stack.livekit.url, token)
            b.callers.append(p)
            people.append(p)
        try:
            for p in people:
                await wait_listening(p, timeout=40)
            return people
        except (asyncio.TimeoutError, AssertionError):
            print(f"  (room of {n}: no agent, attempt {attempt + 1}; trying a new room)")
            for p in people:
                await p.leave()
    raise SystemExit(f"no agent joined a room of {n} in {attempts} attempts")


def model_session(b: Bench, since: float):
    """The room's Gemini session: the latest opened since the room was made."""
    sessions = [s for s in b.stack.gemini.sessions if s.connected_at >= since]
    return sessions[-1] if sessions else None


async def one_turn(b: Bench, people: list, k: int, since: float) -> tuple[float | None, float]:
    """Person k % n says sentence k; returns (speech out -> model, seconds of speech lost)."""
    who = people[k % len(people)]
    said = speech(SENTENCES[k % len(SENTENCES)])
    session = model_session(b, since)
    n_utt = len(session.utterances) if session else 0
    t_say = time.perf_counter()
    who.say(said)
    end = await who.wait_spoken()
    try:
        await who.wait_reply(end, quiet_s=0.6, timeout=20)
    except AssertionError:
        print(f"  (turn {k}: no reply heard; counted as missed)")
    session = model_session(b, since)
    if session is None:
        return None, float("nan")
    first = next(
        (m.at for m in session.received
         if m.kind == "audio" and m.at >= t_say
         and np.abs(np.frombuffer(m.body.data, np.int16).astype(np.int32)).max(initial=0) >= LOUD),
        None,
    )
    lost = float("nan")
    if len(session.utterances) > n_utt:
        heard = np.frombuffer(session.utterances[n_utt], np.int16)
        loud = np.nonzero(np.abs(heard.astype(np.int32)) >= LOUD)[0]
        heard_s = (loud[-1] - loud[0]) / 16000 if len(loud) else 0.0
        said_loud = np.nonzero(np.abs(said.astype(np.int32)) >= LOUD)[0]
        said_s = (said_loud[-1] - said_loud[0]) / 48000
        lost = max(0.0, said_s - heard_s)
    return (None if first is None else first - t_say), lost


async def switch_phase(b: Bench, n: int, turns: int) -> tuple[list[float], list[float]]:
    since = time.monotonic()
    people = await join_room(b, n)
    await asyncio.sleep(1.0)
    lat, lost = [], []
    for k in range(turns):
        latency, gone = await one_turn(b, people, k, since)
        if latency is not None:
            lat.append(latency)
        lost.append(gone)
        await asyncio.sleep(0.5)
    for p in people:
        await p.leave()
    return lat, lost


async def cpu_phase(b: Bench, n: int, window: float) -> tuple[float, int]:
    since = time.monotonic()
    people = await join_room(b, n)
    await asyncio.sleep(1.0)
    pid = b.workers[AGENT].proc.pid
    c0, t0 = worker_cpu_s(pid), time.monotonic()
    k = 0
    while time.monotonic() - t0 < window:
        await one_turn(b, people, k, since)
        k += 1
    c1, t1 = worker_cpu_s(pid), time.monotonic()
    for p in people:
        await p.leave()
    return (c1 - c0) / ((t1 - t0) / 60), k


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=6, help="turns in the speaker-switch phase")
    ap.add_argument("--switch-people", type=int, default=3, help="people in the speaker-switch meeting")
    ap.add_argument("--people", default="2,4,8", help="meeting sizes for the CPU phase")
    ap.add_argument("--window", type=float, default=20.0, help="seconds measured per CPU step")
    ap.add_argument("--phases", default="switch,cpu", help="which parts to run")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    async with bench_stack("bench-meeting") as b:
        await b.start_worker(AGENT, {"AGENT_AGENT__GREET": "false",
                                     "AGENT_MEETING__REPLY_POLICY": "always"}, trace=False)
        if "switch" in phases:
            await switch_report(b, args)
        if "cpu" in phases:
            await cpu_report(b, args)


async def switch_report(b: Bench, args) -> None:
    print("speaker switch: a person's first speech frame sent -> reaching the model")
    base_lat, base_lost = await switch_phase(b, 1, args.turns)
    lat, lost = await switch_phase(b, args.switch_people, args.turns)
    print(f"  one-to-one call          {summary(base_lat)}")
    print(f"  meeting of {args.switch_people}, switching  {summary(lat)}"
          f"   p50 {ratio(pct(lat, 50), pct(base_lat, 50))} of one-to-one")
    fmt = lambda xs: ", ".join("n/a" if x != x else f"{x * 1000:.0f}" for x in xs)  # noqa: E731
    print(f"  speech lost per turn (ms): one-to-one [{fmt(base_lost)}]; meeting [{fmt(lost)}]")


async def cpu_report(b: Bench, args) -> None:
    print("CPU of the agent worker per meeting-minute (people take turns, every turn answered)")
    base_cpu, base_turns = await cpu_phase(b, 1, args.window)
    print(f"  one-to-one call   {base_cpu:6.2f} CPU-s/min  ({base_turns} turns)")
    for n in [int(x) for x in args.people.split(",") if x]:
        cpu, turns = await cpu_phase(b, n, args.window)
        print(f"  {n} people          {cpu:6.2f} CPU-s/min  ({turns} turns)   {ratio(cpu, base_cpu)} of one-to-one")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
