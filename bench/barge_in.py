"""Issue 5: barge-in. The agent is answering (a long tone); the caller speaks over it.

  speech -> silence      the caller's first loud sample over the agent -> the last loud
                         frame of the agent's audio arriving at the caller
  interrupted -> silence the offline model sending `interrupted` -> that same last frame,
                         split at the agent clearing its WebRTC source (its latency trace):
                         the agent's own reaction, then what was already on its way (the
                         sender, the local LiveKit server, the person's jitter buffer)

Tuned (product default) and framework-default workers side by side, turns alternating.

    python bench/barge_in.py [--turns 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from _harness import (CONFIGS, LOUD, bench_stack, pct, ratio, speech, summary, tone,
                      wait_listening)

ASK = "Tell me a story."
STOP = "Wait, stop please."


def first_loud_offset(pcm: np.ndarray, rate: int) -> float:
    idx = np.nonzero(np.abs(pcm.astype(np.int32)) >= LOUD)[0]
    return idx[0] / rate if len(idx) else 0.0


def audio_stop(caller, since: float, quiet_s: float = 0.3) -> float | None:
    """Arrival of the last loud frame before the first quiet run of `quiet_s` after `since`."""
    last = None
    quiet_from = None
    for t, a in caller.heard.frames:
        if t < since:
            continue
        if len(a) and np.abs(a).max() >= LOUD:
            last, quiet_from = t, None
        else:
            quiet_from = quiet_from or t
            if last is not None and t - quiet_from >= quiet_s:
                return last
    return None


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=10)
    args = ap.parse_args()
    ask, stop = speech(ASK), speech(STOP)
    onset = first_loud_offset(stop, 48000)
    res = {c: {"speech": [], "interrupted": [], "agent": [], "after_agent": []} for c in CONFIGS}
    async with bench_stack("bench-barge-in") as b:
        for n in range(1, 2 * args.turns + 3, 2):
            b.stack.gemini.script.reply(n, audio=tone(330, 4.0))      # the answer talked over
            b.stack.gemini.script.reply(n + 1, audio=tone(330, 0.1))  # a short reply to "stop"
        for c, env in CONFIGS.items():
            await b.start_worker(c, {**env, "AGENT_AGENT__GREET": "false"})
        callers, sessions = {}, {}
        for c in CONFIGS:
            before = len(b.stack.gemini.active_sessions)
            callers[c] = await b.join(c)
            await wait_listening(callers[c])
            sessions[c] = b.stack.gemini.active_sessions[before]
        print(f"{args.turns} barge-ins per configuration, alternating")
        for turn in range(args.turns):
            for c, caller in callers.items():
                caller.say(ask)
                spoken = await caller.wait_spoken()
                await caller.wait_for(lambda: caller.heard.first_loud(spoken), 20, "the answer")
                await asyncio.sleep(1.0)
                caller.say(stop)
                end = await caller.wait_spoken()
                barge_at = end - len(stop) / 48000 + onset
                await asyncio.sleep(0.6)
                stopped = await caller.wait_for(lambda: audio_stop(caller, barge_at), 10, "the agent to stop")
                intr = [m.at for m in sessions[c].sent if m.content.get("interrupted") and m.at >= barge_at - 0.5]
                r = res[c]
                r["speech"].append(stopped - barge_at)
                if intr:
                    r["interrupted"].append(stopped - intr[0])
                await caller.wait_reply(end, quiet_s=0.5, timeout=20)
                await asyncio.sleep(0.3)
                if intr:  # the agent's trace is on disk by now
                    clears = [e["t"] for e in b.trace(c, caller.room_name) if e["ev"] == "clear" and e["t"] >= intr[0]]
                    if clears:
                        r["agent"].append(clears[0] - intr[0])
                        r["after_agent"].append(stopped - clears[0])
            print(f"  turn {turn + 1}/{args.turns} done", end="\r", flush=True)
        print()
    t, f = res["tuned"], res["framework"]
    print("\nBarge-in (tuned = product default, framework = livekit-agents defaults)")
    for key, label in (("speech", "caller starts speaking -> agent audio stops at the caller"),
                       ("interrupted", "model's `interrupted` -> agent audio stops at the caller"),
                       ("agent", "  of which: `interrupted` -> the agent clears its WebRTC source"),
                       ("after_agent", "  and: source cleared -> audio stops at the caller (in flight)")):
        print(label)
        print(f"  tuned     {summary(t[key])}")
        print(f"  framework {summary(f[key])}")
        print(f"  ratio tuned/framework: p50 {ratio(pct(t[key], 50), pct(f[key], 50))}  "
              f"p95 {ratio(pct(t[key], 95), pct(f[key], 95))}")
    print("target: interrupted -> stop <= 100 ms")


if __name__ == "__main__":
    asyncio.run(main())
