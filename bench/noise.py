"""Noise suppression (agents/noise.py, `noise:` settings): what it costs, beside the path
without it, in one run. Two workers side by side: `ns` suppresses the caller's audio
(noise.sdk: webrtc), `plain` does not (noise.sdk: off); everything else is equal.

  CPU      CPU-seconds per call-minute of each worker's process tree (worker, its job
           process), while both callers talk in a noisy room for --seconds; and the
           suppressor alone on one call-minute of 10 ms frames, in this process.
  latency  the caller's first loud frame of a clean sentence -> its first loud chunk at
           the (offline) model, turns alternating between the two rooms; the difference
           of the medians is the latency the suppressor adds.
  SNR      speech over noise power as the model received it, for the noisy speech.

    python bench/noise.py [--seconds 60] [--turns 10]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from livekit import rtc

from _harness import LOUD, bench_stack, pct, speech, wait_listening

from agents.noise import WebRTCNoiseSuppressor
from tests.support.caller import RATE

CONFIGS = {"ns": {"AGENT_NOISE__SDK": "webrtc"}, "plain": {"AGENT_NOISE__SDK": "off"}}
SENTENCE = "Could you check the order I placed yesterday afternoon?"


def tree_cpu(pid: int) -> float:
    """CPU-seconds of a process and its children (ended children through their reaper)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + (t.children_user + t.children_system if p is root else 0.0)
        except psutil.Error:
            pass
    return total


def pink_noise(seconds: float, rate: int = RATE, vol: float = 0.12) -> np.ndarray:
    path = Path(tempfile.mkdtemp(prefix="bench-noise-")) / "pink.wav"
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed", str(path),
                    "synth", f"{seconds:.2f}", "pinknoise", "vol", str(vol)], check=True)
    return np.frombuffer(path.read_bytes()[44:], np.int16).astype(np.float32)


def suppressor_alone(seconds: float = 60.0) -> float:
    """CPU-seconds WebRTC's suppressor takes for `seconds` of 16 kHz audio in 10 ms frames."""
    noise = pink_noise(seconds, 16000).astype(np.int16)
    ns = WebRTCNoiseSuppressor()
    frames = [rtc.AudioFrame(noise[i : i + 160].tobytes(), 16000, 1, 160) for i in range(0, len(noise) - 159, 160)]
    t0 = time.process_time()
    for f in frames:
        ns._process(f)
    took = time.process_time() - t0
    ns._close()
    return took


def first_loud_at_model(session, since: float) -> float | None:
    for m in session.received:
        if m.kind == "audio" and m.at >= since:
            a = np.frombuffer(m.body.data, np.int16)
            if len(a) and int(np.abs(a.astype(np.int32)).max()) >= LOUD:
                return m.at
    return None


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="noisy talking time for the CPU figure")
    ap.add_argument("--turns", type=int, default=10, help="clean sentences per room for the latency figure")
    args = ap.parse_args()

    said = speech(SENTENCE)
    lead = int(np.argmax(np.abs(said.astype(np.int32)) >= LOUD))  # first loud sample
    noise = pink_noise(args.seconds + 1)
    loop_len = len(noise)
    talk = np.resize(np.concatenate([said, np.zeros(RATE // 2, np.int16)]).astype(np.float32), loop_len)
    noisy = np.clip(talk + noise, -32768, 32767).astype(np.int16)[: int(args.seconds * RATE)]

    async with bench_stack("bench-noise") as b:
        sessions, callers, workers = {}, {}, {}
        for name, env in CONFIGS.items():
            workers[name] = await b.start_worker(name, {**env, "AGENT_AGENT__GREET": "false"}, trace=False)
        for name in CONFIGS:
            since = time.monotonic()
            callers[name] = await b.join(name)
            await wait_listening(callers[name])
            sessions[name] = b.gemini_session_for(since)

        # ---- latency: clean sentences, alternating rooms ---------------------------------
        lat: dict[str, list[float]] = {n: [] for n in CONFIGS}
        for turn in range(args.turns):
            for name, caller in callers.items():
                await asyncio.sleep(0.3)
                t_say = time.perf_counter()  # the next 10 ms tick sends the sentence's first frame
                caller.say(said)
                spoken = await caller.wait_spoken()
                await asyncio.sleep(0.3)
                got = first_loud_at_model(sessions[name], t_say)
                if got is not None:
                    lat[name].append(got - (t_say + lead / RATE))
                await caller.wait_reply(spoken, quiet_s=0.4, timeout=20)
            print(f"  latency turn {turn + 1}/{args.turns}", end="\r", flush=True)
        print()
        for name in CONFIGS:
            v = lat[name]
            print(f"  input latency {name:5s}   p50 {pct(v, 50) * 1000:6.1f} ms  p95 {pct(v, 95) * 1000:6.1f} ms  (n={len(v)})")
        print(f"  added by suppression  p50 {(pct(lat['ns'], 50) - pct(lat['plain'], 50)) * 1000:+6.1f} ms", flush=True)

        # ---- CPU: both rooms talk in a noisy room at once ---------------------------------
        await asyncio.sleep(1.0)
        before = {n: tree_cpu(w.proc.pid) for n, w in workers.items()}
        t0 = time.monotonic()
        for caller in callers.values():
            caller.say(noisy)
        # a saturated machine can slow the callers' real-time microphones down: wait it out
        await asyncio.gather(*(c.wait_spoken(timeout=3 * args.seconds + 60) for c in callers.values()))
        wall = time.monotonic() - t0
        cpu = {n: tree_cpu(w.proc.pid) - before[n] for n, w in workers.items()}

    alone = suppressor_alone(60.0)
    minutes = len(noisy) / RATE / 60  # call-minutes of audio each room sent
    print(f"\nNoise suppression (WebRTC's, in livekit-rtc) vs none, one run; {args.turns} sentences per "
          f"room, {len(noisy) / RATE:.0f} s of noisy talk in both rooms at once ({wall:.0f} s wall)")
    print(f"  CPU per call-minute   ns {cpu['ns'] / minutes:6.2f} s   plain {cpu['plain'] / minutes:6.2f} s   "
          f"difference {(cpu['ns'] - cpu['plain']) / minutes:+6.2f} s (whole worker trees, a busy machine moves this)")
    print(f"  suppressor alone      {alone:6.3f} CPU-s per call-minute of 16 kHz audio "
          f"({alone / 60 * 100:.2f} % of a core)")
    for name in CONFIGS:
        v = lat[name]
        print(f"  input latency {name:5s}   p50 {pct(v, 50) * 1000:6.1f} ms  p95 {pct(v, 95) * 1000:6.1f} ms  (n={len(v)})")
    print(f"  added by suppression  p50 {(pct(lat['ns'], 50) - pct(lat['plain'], 50)) * 1000:+6.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
