"""Issue 5: the latency the agent itself adds, tuned (the product's default) against the
framework's defaults, two worker configurations side by side in one run.

  input   a frame arriving from the room at the agent (RoomIO) -> its bytes leaving on the
          model's socket
  output  the model's audio arriving at the agent -> that audio leaving the agent's WebRTC
          sender (AudioSource.capture_frame, plus the audio queued ahead of it)

Each turn the caller speaks a sentence; the offline model answers with a tone (so a gap in
the agent's audio at the caller is easy to see). Turns alternate between the two rooms.

    python bench/agent_latency.py [--turns 20] [--reply-s 0.8]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from _harness import (CONFIGS, LOUD, bench_stack, input_latencies, output_latencies, ratio, pct,
                      speech, summary, tone, wait_flush, wait_listening)

SENTENCE = "Hello there, how are you today?"


def gaps_at_caller(caller, since: float) -> tuple[int, float]:
    """Silent 10 ms frames inside the reply as the caller heard it (a continuous tone)."""
    frames = [(t, a) for t, a in caller.heard.frames if t >= since]
    loud = [i for i, (_, a) in enumerate(frames) if len(a) and np.abs(a).max() >= LOUD]
    if not loud:
        return 0, 0.0
    inside = frames[loud[0]: loud[-1] + 1]
    quiet = [a for _, a in inside if not len(a) or np.abs(a).max() < LOUD]
    return len(quiet), sum(len(a) for a in quiet) / 48000


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--reply-s", type=float, default=0.8)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra AGENT_* setting for the tuned worker, e.g. AGENT_LATENCY__OUTPUT_QUEUE_MS=40")
    args = ap.parse_args()
    CONFIGS["tuned"] = {**CONFIGS["tuned"], **dict(kv.split("=", 1) for kv in args.set)}

    said = speech(SENTENCE)
    results = {name: {"in": [], "out": [], "first": [], "gaps": 0, "gap_s": 0.0} for name in CONFIGS}
    async with bench_stack("bench-agent-latency") as b:
        b.stack.gemini.script.default_reply_audio = tone(440, args.reply_s)
        for name, env in CONFIGS.items():
            await b.start_worker(name, {**env, "AGENT_AGENT__GREET": "false"})
        callers = {}
        for name in CONFIGS:
            callers[name] = await b.join(name)
        await asyncio.gather(*(wait_listening(c) for c in callers.values()))
        print(f"{args.turns} turns per configuration, alternating; reply: {args.reply_s:.1f} s tone")
        for turn in range(args.turns):
            for name, caller in callers.items():
                t0 = time.monotonic()
                caller.say(said)
                spoken = await caller.wait_spoken()
                await caller.wait_reply(spoken, quiet_s=0.4, timeout=20)
                t1 = time.monotonic()
                tr = await wait_flush(b, name, caller.room_name, {"in", "sent", "model", "play"}, t0)
                r = results[name]
                r["in"] += input_latencies(tr, t0, spoken + 0.05)
                out, first = output_latencies(tr, spoken, t1)
                r["out"] += out
                r["first"] += first
                g, gs = gaps_at_caller(caller, spoken)
                r["gaps"] += g
                r["gap_s"] += gs
            print(f"  turn {turn + 1}/{args.turns} done", end="\r", flush=True)
        print()

    t, f = results["tuned"], results["framework"]
    print("\nAgent-added latency (tuned = product default, framework = livekit-agents defaults)")
    for key, label in (("in", "input  (room frame -> model socket)"),
                       ("out", "output (model audio -> WebRTC sender), every frame"),
                       ("first", "output, first frame of each reply")):
        print(f"{label}")
        print(f"  tuned     {summary(t[key])}")
        print(f"  framework {summary(f[key])}")
        print(f"  ratio tuned/framework: p50 {ratio(pct(t[key], 50), pct(f[key], 50))}  "
              f"p95 {ratio(pct(t[key], 95), pct(f[key], 95))}")
    for name, r in results.items():
        print(f"silent 10 ms frames inside the replies at the caller ({name}): {r['gaps']} "
              f"({r['gap_s'] * 1000:.0f} ms over {args.turns} replies)")
    print("targets: input p95 <= 15 ms, output p95 <= 20 ms")


if __name__ == "__main__":
    asyncio.run(main())
