"""Fault soak: calls that keep talking while Gemini fails under them.

Concurrent calls (the product's AgentSession with a real-time microphone and speaker, as in
the tests) ask question after question of the offline Gemini server, while faults of every
kind are injected into their connections at random moments: goAway, close 1011, close 1000,
a refused reconnect (HTTP 503), a stall of the open connection, a setup never answered.
Half the calls run the product's connection layer (agents/gemini/connection.py), half the
plugin's own behaviour (livekit-plugins-google 1.8.9 as shipped) as the baseline, side by
side in one run against the same server and the same fault stream.

Printed per variant: calls lost (the session ended or stopped answering), questions
never answered in full, replies cut (heard partly before a fault), caller audio lost
(seconds of questions never answered), and the extra delay a fault adds to the next
reply (p50/p95 over the replies that followed a fault, minus the fault-free median).

    python bench/gemini_faults.py [--calls 3] [--faults 100] [--mean-interval 6] [--seed 1]

A call gets a fault every `--mean-interval` seconds on average: far more often than the
service fails, yet leaving each call the few seconds a recovery takes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS  # noqa: E402
from livekit.plugins.google.realtime import realtime_api  # noqa: E402

from agents.assistant import Assistant  # noqa: E402
from agents.gemini import build_realtime_model  # noqa: E402
from agents.session import build_session  # noqa: E402
from agents.settings import load_settings  # noqa: E402
from bench._harness import pct, speech  # noqa: E402
from devstack.gemini import OfflineGeminiServer  # noqa: E402
from tests.support.audio import best_correlation, resample, trim_silence  # noqa: E402
from tests.support.session_io import Microphone, Speaker  # noqa: E402

RATE = 48000
QUESTIONS = ["What is the weather like?", "Tell me about the trains to Busan tomorrow morning.",
             "Can you book a table for two?", "Please read me the news headlines of today."]
KINDS = ("go_away", "close_1011", "close_1000", "refused_503", "stall", "setup_stall")
ANSWER_TIMEOUT_S = 40.0


@dataclass
class Turn:
    answered: bool
    cut_before: int  # partial replies heard before the whole answer
    latency: float | None  # end of speech -> whole answer starts
    after_fault: bool
    question_s: float


@dataclass
class Call:
    variant: str
    key: str
    turns: list[Turn] = field(default_factory=list)
    lost: str = ""
    fault_times: list[float] = field(default_factory=list)


def whole_echo(segment, question: np.ndarray) -> bool:
    pcm, rate = segment.pcm()
    expected = trim_silence(resample(question, RATE, rate), rate)
    heard = trim_silence(pcm, rate)
    return len(heard) >= 0.95 * len(expected) and best_correlation(heard, expected) >= 0.9


def build(variant: str, key: str):
    settings = load_settings()
    model = build_realtime_model(settings, settings.instructions())
    # one API key per call, so the injector can find the call's connections on the server
    model._opts.api_key = key
    if variant == "plugin":
        # the product with the layer off: the plugin's own session and retry policy
        model._session_class = realtime_api.RealtimeSession
        model._opts.conn_options = DEFAULT_API_CONNECT_OPTIONS
    session = build_session(settings, echo_warmup_s=None, model=model)
    return settings, session


async def run_call(call: Call, server: OfflineGeminiServer, stop: asyncio.Event, rng: random.Random) -> None:
    settings, session = build(call.variant, call.key)
    mic, speaker = Microphone(RATE), Speaker(24000)
    session.input.audio, session.output.audio = mic, speaker
    closed = asyncio.Event()
    session.on("close", lambda ev: closed.set())
    await session.start(agent=Assistant(settings))
    try:
        while not stop.is_set():
            question = speech(rng.choice(QUESTIONS), RATE)
            first_segment = len(speaker.segments)
            started = time.perf_counter()
            mic.say(question)
            # a closed session stops pulling the microphone: do not wait on it then
            spoken = asyncio.ensure_future(mic.wait_spoken())
            await asyncio.wait([spoken, asyncio.ensure_future(closed.wait())], return_when=asyncio.FIRST_COMPLETED)
            if not spoken.done():
                spoken.cancel()
                call.lost = "the session closed"
                return
            spoken_at = spoken.result()
            deadline = spoken_at + ANSWER_TIMEOUT_S
            answer, cut = None, 0
            while answer is None and time.perf_counter() < deadline and not closed.is_set():
                await asyncio.sleep(0.05)
                done = [s for s in speaker.segments[first_segment:] if s.ended_at is not None]
                cut = 0
                for s in done:
                    if whole_echo(s, question):
                        answer = s
                        break
                    cut += 1
            after_fault = any(started - 2.0 <= t <= time.perf_counter() for t in call.fault_times)
            call.turns.append(Turn(answer is not None, cut, answer.started_at - spoken_at if answer else None,
                                   after_fault, len(question) / RATE))
            if closed.is_set():
                call.lost = "the session closed"
                return
            if answer is None and len(call.turns) >= 2 and not call.turns[-2].answered:
                call.lost = "two questions in a row unanswered"
                return
            await asyncio.sleep(rng.uniform(0.3, 1.0))
    finally:
        await session.aclose()
        await speaker.aclose()


async def inject(server: OfflineGeminiServer, call: Call, rng: random.Random, mean_interval: float,
                 log: list[tuple[str, str]], count: int) -> None:
    """Faults into one call's connections at random moments, `mean_interval` apart on average
    (a Poisson process per call, so every call sees the same fault rate)."""
    while len(log) < count and not call.lost:
        await asyncio.sleep(rng.expovariate(1.0 / mean_interval))
        sessions = [s for s in server.active_sessions
                    if s.headers.get("x-goog-api-key") == call.key and s.setup_done.is_set() and not s.stalled]
        if not sessions or len(log) >= count:
            continue
        target, kind = sessions[-1], rng.choice(KINDS)
        call.fault_times.append(time.perf_counter())
        log.append((call.variant, kind))
        if len(log) % 10 == 0:
            print(f"{len(log)} faults injected", flush=True)
        if kind == "go_away":
            await target.send_go_away(f"{rng.uniform(2, 6):.1f}s")
        elif kind == "close_1011":
            await target.close(1011, "Internal error encountered.")
        elif kind == "close_1000":
            await target.close(1000, "")
        elif kind == "refused_503":
            server.script.refuse_connections(1, status=503)
            await target.close(1011, "Internal error encountered.")
        elif kind == "stall":
            target.stall()
        elif kind == "setup_stall":
            server.script.stall_setups(1)
            await target.close(1011, "Internal error encountered.")


def _ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else str(round(seconds * 1000))


def report(variant: str, calls: list[Call]) -> dict:
    turns = [t for c in calls for t in c.turns]
    normal = [t.latency for t in turns if t.latency is not None and not t.after_fault]
    base = pct(normal, 50)
    extra = [t.latency - base for t in turns if t.latency is not None and t.after_fault]
    return {
        "calls lost": sum(bool(c.lost) for c in calls),
        "questions": len(turns),
        "never answered in full": sum(not t.answered for t in turns),
        "replies cut": sum(t.cut_before for t in turns),
        "caller audio lost (s)": round(sum(t.question_s for t in turns if not t.answered), 1),
        "extra delay after a fault p50 (ms)": _ms(pct(extra, 50)),
        "extra delay after a fault p95 (ms)": _ms(pct(extra, 95)),
        "replies after a fault": len(extra),
    }


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    async with OfflineGeminiServer() as server:
        os.environ.update(server.client_env())
        for key in [k for k in os.environ if k.startswith("AGENT_")]:
            del os.environ[key]
        os.environ.update({"AGENT_AGENT__GREET": "false", "AGENT_AUDIO__AUTO_GAIN_CONTROL": "false",
                           "AGENT_CONNECTION__SETUP_TIMEOUT_S": "2", "AGENT_CONNECTION__STALL_TIMEOUT_S": "3"})
        calls = [Call(v, f"{v}-{i}") for i in range(args.calls) for v in ("product", "plugin")]
        stop = asyncio.Event()
        log: list[tuple[str, str]] = []
        tasks = [asyncio.create_task(run_call(c, server, stop, random.Random(rng.random()))) for c in calls]
        await asyncio.sleep(2.0)
        injectors = [inject(server, c, random.Random(rng.random()), args.mean_interval, log, args.faults)
                     for c in calls]
        try:
            await asyncio.wait_for(asyncio.gather(*injectors), args.max_seconds)
        except asyncio.TimeoutError:
            print(f"stopped injecting after --max-seconds {args.max_seconds:g}")
        await asyncio.sleep(8.0)  # the last faults' questions get their chance
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    by_kind = {k: sum(1 for _, kind in log if kind == k) for k in KINDS}
    print(f"\nfaults injected: {len(log)} ({', '.join(f'{k} {n}' for k, n in by_kind.items())}); "
          f"{args.calls} calls per variant, seed {args.seed}")
    rows = {v: report(v, [c for c in calls if c.variant == v]) for v in ("product", "plugin")}
    faults = {v: sum(1 for var, _ in log if var == v) for v in rows}
    print(f"{'':40s} {'product':>10s} {'plugin (baseline)':>18s}")
    print(f"{'faults on its calls':40s} {faults['product']:>10d} {faults['plugin']:>18d}")
    for key in rows["product"]:
        print(f"{key:40s} {rows['product'][key]!s:>10s} {rows['plugin'][key]!s:>18s}")
    for c in calls:
        if c.lost:
            print(f"  lost: {c.key}: {c.lost} after {len(c.turns)} questions")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=3, help="concurrent calls per variant")
    p.add_argument("--faults", type=int, default=100, help="faults to inject in all")
    p.add_argument("--mean-interval", type=float, default=6.0,
                   help="mean seconds between faults in one call (each call gets its own)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=600)
    asyncio.run(main(p.parse_args()))
