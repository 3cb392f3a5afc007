"""Issue 5: time to greeting. A person joins a room; the agent (greeting on, prewarmed job
processes) asks the model to greet; the offline model answers at once with a tone.

  join -> first audio   Room.connect() called -> the first loud agent frame at the person
  model's own time      the server receiving the greeting request -> its first audio sent
  beyond the model      the difference: dispatch, room and Gemini connections, publishing
  person's own connect  Room.connect() called -> it returned / the person's microphone
                        published: inside the window, but the person's, not the agent's
  agent's part          the room created on the server (the dispatch starts there) -> the
                        first loud agent frame at the person, less the model's own time

Where the time goes: every milestone of every room, from the person's Room.connect() call,
taken from the person (this process), the local LiveKit server and the offline Gemini
server (both in this process) and the agent's latency trace (`latency.trace_file`: the
worker's dispatch timeline, room connect, participant found, Gemini connect, publishing,
the greeting request, the first loud frame to the WebRTC source). All on CLOCK_MONOTONIC.

Tuned (product default) and framework-default (`latency.mode: framework`) workers, rooms
alternating, side by side in the same run.

    python bench/greeting.py [--rooms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _harness import (
    CONFIGS, LOUD, bench_stack, caller_token, ms, pct, peak, ratio, server_audio_out, summary, tone,
)
from tests.support.caller import Caller

# milestone -> label, in the order of the framework's own startup
MILESTONES = [
    ("room_created", "server: room created (dispatch starts)"),
    ("person_joinresp", "server: the person's JoinResponse sent"),
    ("person_connected", "person: Room.connect() returned"),
    ("person_mic", "person: microphone published"),
    ("job_received", "worker: job request received"),
    ("job_accepted", "worker: job accepted"),
    ("job_assigned", "worker: assignment (token) received"),
    ("job_launched", "worker: job handed to a prewarmed process"),
    ("job_entry", "agent: entrypoint started"),
    ("gemini_connect", "agent: Gemini connect started"),
    ("gemini_ws", "model: WebSocket accepted (after TLS)"),
    ("gemini_setup", "model: setup received"),
    ("gemini_connected", "agent: Gemini connected (setupComplete)"),
    ("room_connected", "agent: room connected"),
    ("agent_joinresp", "server: the agent's JoinResponse sent"),
    ("agent_published", "agent: audio track published"),
    ("participant", "agent: participant found (ACTIVE)"),
    ("greet", "agent: generate_reply (on_enter)"),
    ("session_started", "agent: session.start() returned"),
    ("agent_track_media", "server: the agent's track negotiated (media ready)"),
    ("agent_subscribed", "agent: its track subscribed by the person"),
    ("model_asked", "model: greeting request received"),
    ("model_audio", "model: first loud audio sent"),
    ("agent_play", "agent: first loud frame to the WebRTC source"),
    ("heard", "person: first loud agent audio heard"),
]

# critical-path segments: (label, from, to)
SEGMENTS = [
    ("person's own connect (signal + JoinResponse)", "t0", "person_connected"),
    ("person's microphone publish", "person_connected", "person_mic"),
    ("dispatch: room created -> worker has the request", "room_created", "job_received"),
    ("dispatch: request -> accepted -> assigned", "job_received", "job_assigned"),
    ("dispatch: assigned -> process -> entrypoint", "job_assigned", "job_entry"),
    ("agent room connect", "job_entry", "room_connected"),
    ("room connected -> participant found", "room_connected", "participant"),
    ("Gemini connect (TLS + setup)", "gemini_connect", "gemini_connected"),
    ("participant found -> generate_reply", "participant", "greet"),
    ("generate_reply -> request at the model", "greet", "model_asked"),
    ("the model's own time", "model_asked", "model_audio"),
    ("model audio -> agent's WebRTC source", "model_audio", "agent_play"),
    ("agent's source -> heard by the person", "agent_play", "heard"),
]


class ServerClock:
    """Monotonic stamps of the local LiveKit server's events, by room."""

    def __init__(self, manager) -> None:
        self.rooms: dict[str, dict[str, float]] = {}
        manager.on("room_started", self._room_started)
        manager.on("participant_joined", self._joined)
        manager.on("track_published", self._published)

    def _room(self, name: str) -> dict[str, float]:
        return self.rooms.setdefault(name, {})

    def _room_started(self, room) -> None:
        # emitted soon after creation: take the room's own creation time
        self._room(room.name)["room_created"] = room.created_at - (time.time() - time.monotonic())

    def _joined(self, room, p) -> None:
        key = "person_joinresp" if not p.is_dependent else "agent_joinresp"
        self._room(room.name).setdefault(key, time.monotonic())

    def _published(self, room, p, track) -> None:
        if p.is_dependent and track.kind == "audio":
            self._room(room.name).setdefault("agent_track_media", time.monotonic())


def first(events: list[dict], ev: str, since: float, pred=lambda e: True) -> float | None:
    for e in events:
        if e["ev"] == ev and e["t"] >= since - 5.0 and pred(e):
            return e["t"]
    return None


async def one_room(b, config: str, server_clock: ServerClock, room: str) -> dict[str, float]:
    caller = Caller("caller")
    token = caller_token(b.stack.livekit.api_key, b.stack.livekit.api_secret, room, "caller",
                         agent_name=f"bench-{config}")
    m: dict[str, float] = {}
    connect = caller.room.connect

    async def timed_connect(*a, **kw) -> None:
        await connect(*a, **kw)
        m["person_connected"] = time.perf_counter()

    caller.room.connect = timed_connect  # type: ignore[method-assign]
    before = len(b.stack.gemini.active_sessions)
    t0 = time.perf_counter()
    m["t0"] = t0
    b.callers.append(caller)
    await caller.join(b.stack.livekit.url, token)
    m["person_mic"] = time.perf_counter()
    m["heard"] = await caller.wait_for(lambda: caller.heard.first_loud(t0), 30, "the greeting")
    sess = b.stack.gemini.active_sessions[before:]
    if sess:
        s = sess[0]
        m["gemini_ws"] = s.connected_at
        setup = [x.at for x in s.received if x.kind == "setup"]
        if setup:
            m["gemini_setup"] = setup[0]
        asked = [x.at for x in s.received if x.kind in ("client_content", "text")]
        sent = [t for t, d in server_audio_out(s) if peak(d) >= LOUD]
        if asked and sent:
            m["model_asked"], m["model_audio"] = asked[0], sent[0]
    m.update(server_clock.rooms.get(room, {}))
    await caller.leave()
    b.callers.remove(caller)
    # the job closes its trace when the person has gone: then everything is on disk
    deadline = time.monotonic() + 5.0
    tr: list[dict] = []
    while time.monotonic() < deadline:
        tr = b.trace(config, room)
        if any(e["ev"] == "play" for e in tr) and any(e["ev"] == "session_started" for e in tr):
            break
        await asyncio.sleep(0.1)
    for ev in ("job_received", "job_accepted", "job_assigned", "job_launched", "job_entry",
               "room_connected", "participant", "gemini_connect", "gemini_connected",
               "greet", "session_started", "agent_subscribed"):
        t = first(tr, ev, t0)
        if t is not None:
            m[ev] = t
    t = first(tr, "agent_published", t0, lambda e: e.get("kind") == 1)  # KIND_AUDIO
    if t is not None:
        m["agent_published"] = t
    t = first(tr, "play", t0, lambda e: e.get("lvl", 0) >= LOUD)
    if t is not None:
        m["agent_play"] = t
    m["gemini_connects"] = sum(1 for e in tr if e["ev"] == "gemini_connect")
    return m


def rel(rows: list[dict[str, float]], key: str, base: str = "t0") -> list[float]:
    return [r[key] - r[base] for r in rows if key in r and base in r]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, default=10)
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    async with bench_stack("bench-greeting") as b:
        b.stack.gemini.script.default_reply_audio = tone(440, 0.5)
        server_clock = ServerClock(b.stack.livekit.manager)
        for c, env in CONFIGS.items():
            await b.start_worker(c, {**env, "AGENT_AGENT__GREET": "true",
                                     "AGENT_WORKER__NUM_IDLE_PROCESSES": "2"})
        await asyncio.sleep(3.0)  # idle processes prewarmed
        print(f"{args.rooms} rooms per configuration, alternating")
        n = 0
        for i in range(args.rooms):
            for c in CONFIGS:
                n += 1
                rows[c].append(await one_room(b, c, server_clock, f"bench-{c}-{n}"))
                await asyncio.sleep(1.5)  # the worker replaces the used process
            print(f"  room {i + 1}/{args.rooms} done", end="\r", flush=True)
        print()
    report(rows)


def report(rows: dict[str, list[dict[str, float]]]) -> None:
    t, f = rows["tuned"], rows["framework"]
    for r in t + f:
        if "model_asked" in r:
            r["model"] = r["model_audio"] - r["model_asked"]
            r["beyond"] = r["heard"] - r["t0"] - r["model"]
            if "room_created" in r:
                r["agent_part"] = r["heard"] - r["room_created"] - r["model"]

    def vals(rs, key):
        return [r[key] for r in rs if key in r]

    print("\nTime to greeting (tuned = product default, framework = livekit-agents defaults)")
    headline = [
        ("join -> first agent audio at the person", lambda rs: rel(rs, "heard")),
        ("the model's own time (request -> first audio sent)", lambda rs: vals(rs, "model")),
        ("beyond the model's time", lambda rs: vals(rs, "beyond")),
        ("  of which the person's own connect (Room.connect() returned)", lambda rs: rel(rs, "person_connected")),
        ("  the agent's part (room created -> heard, less the model)", lambda rs: vals(rs, "agent_part")),
    ]
    for label, get in headline:
        a, b_ = get(t), get(f)
        print(label)
        print(f"  tuned     {summary(a)}")
        print(f"  framework {summary(b_)}")
        print(f"  ratio tuned/framework: p50 {ratio(pct(a, 50), pct(b_, 50))}  p95 {ratio(pct(a, 95), pct(b_, 95))}")

    print("\nMilestones, ms after the person's Room.connect() call (p50 / p95)")
    print(f"  {'':52s} {'tuned':>15s}   {'framework':>15s}")
    for key, label in sorted(MILESTONES, key=lambda kv: pct(rel(t, kv[0]), 50) if rel(t, kv[0]) else 1e9):
        a, b_ = rel(t, key), rel(f, key)
        print(f"  {label:52s} {ms(pct(a, 50))} /{ms(pct(a, 95))}   {ms(pct(b_, 50))} /{ms(pct(b_, 95))}")

    print("\nSegments, ms (p50 / p95; each measured per room)")
    print(f"  {'':52s} {'tuned':>15s}   {'framework':>15s}  ratio p50")
    for label, a_key, b_key in SEGMENTS:
        a = [r[b_key] - r[a_key] for r in t if a_key in r and b_key in r]
        b_ = [r[b_key] - r[a_key] for r in f if a_key in r and b_key in r]
        print(f"  {label:52s} {ms(pct(a, 50))} /{ms(pct(a, 95))}   {ms(pct(b_, 50))} /{ms(pct(b_, 95))}"
              f"  {ratio(pct(a, 50), pct(b_, 50))}")
    gc_t, gc_f = vals(t, "gemini_connects"), vals(f, "gemini_connects")
    print(f"\nGemini connects per room: tuned {sorted(set(gc_t))}, framework {sorted(set(gc_f))}")
    print("target: beyond the model's time p50 < 500 ms")


if __name__ == "__main__":
    asyncio.run(main())
