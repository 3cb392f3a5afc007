"""Issue 5: time to greeting. A person joins a room; the agent (greeting on, prewarmed job
processes) asks the model to greet; the offline model answers at once with a tone.

  join -> first audio   Room.connect() called -> the first loud agent frame at the person
  model's own time      the server receiving the greeting request -> its first audio sent
  beyond the model      the difference: dispatch, room and Gemini connections, publishing

Tuned (product default) and framework-default workers, rooms alternating.

    python bench/greeting.py [--rooms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _harness import CONFIGS, LOUD, bench_stack, peak, pct, ratio, server_audio_out, summary, tone


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, default=10)
    args = ap.parse_args()
    res = {c: {"total": [], "model": [], "beyond": []} for c in CONFIGS}
    async with bench_stack("bench-greeting") as b:
        b.stack.gemini.script.default_reply_audio = tone(440, 0.5)
        for c, env in CONFIGS.items():
            await b.start_worker(c, {**env, "AGENT_AGENT__GREET": "true",
                                     "AGENT_WORKER__NUM_IDLE_PROCESSES": "2"}, trace=False)
        await asyncio.sleep(3.0)  # idle processes prewarmed
        print(f"{args.rooms} rooms per configuration, alternating")
        for i in range(args.rooms):
            for c in CONFIGS:
                before = len(b.stack.gemini.active_sessions)
                t0 = time.perf_counter()
                caller = await b.join(c)
                first = await caller.wait_for(lambda: caller.heard.first_loud(t0), 30, "the greeting")
                sess = b.stack.gemini.active_sessions[before:]
                model = None
                if sess:
                    s = sess[0]
                    asked = [m.at for m in s.received if m.kind in ("client_content", "text")]
                    sent = [t for t, d in server_audio_out(s) if peak(d) >= LOUD]
                    if asked and sent:
                        model = sent[0] - asked[0]
                r = res[c]
                r["total"].append(first - t0)
                if model is not None:
                    r["model"].append(model)
                    r["beyond"].append(first - t0 - model)
                await caller.leave()
                b.callers.remove(caller)
                await asyncio.sleep(1.5)  # the worker replaces the used process
            print(f"  room {i + 1}/{args.rooms} done", end="\r", flush=True)
        print()
    t, f = res["tuned"], res["framework"]
    print("\nTime to greeting (tuned = product default, framework = livekit-agents defaults)")
    for key, label in (("total", "join -> first agent audio at the person"),
                       ("model", "the model's own time (request -> first audio sent)"),
                       ("beyond", "beyond the model's time")):
        print(label)
        print(f"  tuned     {summary(t[key])}")
        print(f"  framework {summary(f[key])}")
        print(f"  ratio tuned/framework: p50 {ratio(pct(t[key], 50), pct(f[key], 50))}")
    print("target: beyond the model's time p50 < 500 ms")


if __name__ == "__main__":
    asyncio.run(main())
