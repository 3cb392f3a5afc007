"""Issue 3: voice-to-voice latency through the room, beside the direct path, in one run.

From the end of the participant's speech (its last loud sample leaving the caller's
microphone) to the first loud agent audio arriving at the participant, over N turns, split:

  participant -> agent   caller's last loud sample -> the agent's RoomIO frame holding it
  agent -> model         -> the offline Gemini server receiving the chunk holding it
  model                  -> the server sending the first loud reply chunk (its activity
                            detection waits silence_duration_ms = 500 ms: the model's time)
  model -> agent         -> the agent's plugin receiving that chunk
  agent -> participant   -> the caller receiving its first loud frame

Direct path: the same 16 kHz audio, in real time (20 ms chunks, silence between turns),
sent straight to the same offline server with google-genai's client.aio.live.connect;
from its last loud chunk sent to the first loud reply chunk received. Turns alternate
between the room and the direct session, so both see the same machine load.

    python bench/voice_to_voice.py [--turns 20] [--framework]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import numpy as np

from _harness import (CONFIGS, LOUD, bench_stack, last_loud_offset, ms, pct, peak, ratio,
                      server_audio_in, server_audio_out, speech, summary, wait_flush,
                      wait_listening)

SENTENCE = "Could you tell me the weather for tomorrow?"
SEGMENTS = ("participant -> agent", "agent -> model", "model", "model -> agent", "agent -> participant")


class DirectPath:
    """google-genai straight to the offline server: a real-time microphone of 20 ms chunks."""

    def __init__(self, server) -> None:
        self.server = server
        self.pending = np.zeros(0, np.int16)
        self.last_loud_sent: float | None = None
        self.first_loud_rx: list[float] = []
        self.session_obj = None

    async def run(self, ready: asyncio.Event) -> None:
        from google import genai
        from google.genai import types

        from agents.gemini.build import realtime_input_config
        from agents.settings import DEFAULT_MODEL, TurnDetectionSettings

        os.environ.update(self.server.client_env())
        client = genai.Client(api_key=self.server.api_key,
                              http_options=types.HttpOptions(base_url=self.server.base_url))
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.AUDIO],
            realtime_input_config=realtime_input_config(TurnDetectionSettings()),
        )
        before = len(self.server.active_sessions)
        async with client.aio.live.connect(model=DEFAULT_MODEL, config=config) as session:
            self.session_obj = self.server.active_sessions[before] if len(self.server.active_sessions) > before else None
            ready.set()
            await asyncio.gather(self._mic(session), self._rx(session))

    async def _mic(self, session) -> None:
        from google.genai import types

        n = 320  # 20 ms at 16 kHz
        next_at = time.perf_counter()
        while True:
            chunk = self.pending[:n]
            self.pending = self.pending[n:]
            if len(chunk) < n:
                chunk = np.concatenate([chunk, np.zeros(n - len(chunk), np.int16)])
            await session.send_realtime_input(audio=types.Blob(data=chunk.tobytes(), mime_type="audio/pcm;rate=16000"))
            if np.abs(chunk.astype(np.int32)).max() >= LOUD:
                self.last_loud_sent = time.perf_counter()
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def _rx(self, session) -> None:
        was_loud = False
        while True:
            async for msg in session.receive():
                sc = msg.server_content
                if sc and sc.model_turn:
                    for part in sc.model_turn.parts or []:
                        if part.inline_data and part.inline_data.data:
                            loud = peak(part.inline_data.data) >= LOUD
                            if loud and not was_loud:
                                self.first_loud_rx.append(time.perf_counter())
                            was_loud = was_loud or loud
                if sc and sc.turn_complete:
                    was_loud = False


def room_segments(tr, srv, caller, said_end: float, t0: float) -> list[float] | None:
    ins = [e for e in tr if e["ev"] == "in" and e["t"] >= t0 and e["lvl"] >= LOUD]
    rx = [(t, d) for t, d in server_audio_in(srv) if t >= t0 and peak(d) >= LOUD]
    if not ins or not rx:
        return None
    agent_in_end, server_in_end = ins[-1]["t"], rx[-1][0]
    tx = [t for t, d in server_audio_out(srv) if t > server_in_end and peak(d) >= LOUD]
    if not tx:
        return None
    model = [e["t"] for e in tr if e["ev"] == "model" and e["t"] >= tx[0] and e["lvl"] >= LOUD]
    first = caller.heard.first_loud(said_end)
    if not model or first is None:
        return None
    points = [said_end, agent_in_end, server_in_end, tx[0], model[0], first]
    return [b - a for a, b in zip(points, points[1:])]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--framework", action="store_true", help="also run a worker with the framework's defaults")
    args = ap.parse_args()
    configs = ["tuned", "framework"] if args.framework else ["tuned"]

    said = speech(SENTENCE)
    said16 = speech(SENTENCE, 16000)
    tail = last_loud_offset(said, 48000)
    segs = {c: [] for c in configs}
    totals = {c: [] for c in configs}
    direct_totals, direct_model = [], []
    async with bench_stack("bench-v2v") as b:
        for c in configs:
            await b.start_worker(c, {**CONFIGS[c], "AGENT_AGENT__GREET": "false"})
        callers, sessions = {}, {}
        for c in configs:
            before = len(b.stack.gemini.active_sessions)
            callers[c] = await b.join(c)
            await wait_listening(callers[c])
            sessions[c] = b.stack.gemini.active_sessions[before]
        direct = DirectPath(b.stack.gemini)
        ready = asyncio.Event()
        direct_task = asyncio.create_task(direct.run(ready))
        await asyncio.wait_for(ready.wait(), 20)
        await asyncio.sleep(0.5)
        print(f"{args.turns} turns per path ({', '.join(configs)}, direct), alternating; "
              f"utterance {len(said) / 48000:.2f} s")
        try:
            for turn in range(args.turns):
                for c in configs:
                    caller = callers[c]
                    t0 = time.monotonic()
                    caller.say(said)
                    spoken = await caller.wait_spoken()
                    said_end = spoken - tail
                    await caller.wait_reply(spoken, quiet_s=0.4, timeout=20)
                    tr = await wait_flush(b, c, caller.room_name, {"in", "model"}, t0)
                    s = room_segments(tr, sessions[c], caller, said_end, t0)
                    if s is not None:
                        segs[c].append(s)
                        totals[c].append(sum(s))
                # direct path: the same audio
                n_before = len(direct.first_loud_rx)
                direct.pending = np.concatenate([direct.pending, said16])
                while len(direct.pending):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                end = direct.last_loud_sent
                deadline = time.monotonic() + 20
                while len(direct.first_loud_rx) <= n_before and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                if len(direct.first_loud_rx) > n_before and end is not None:
                    direct_totals.append(direct.first_loud_rx[n_before] - end)
                    srv = direct.session_obj
                    if srv is not None:
                        rx = [t for t, d in server_audio_in(srv) if t <= end + 0.5 and peak(d) >= LOUD]
                        tx = [t for t, d in server_audio_out(srv) if rx and t > rx[-1] and peak(d) >= LOUD]
                        if rx and tx:
                            direct_model.append(tx[0] - rx[-1])
                await asyncio.sleep(0.8)  # the direct reply plays out before the next turn
                print(f"  turn {turn + 1}/{args.turns} done", end="\r", flush=True)
        finally:
            direct_task.cancel()
        print()

    print("\nVoice to voice: end of the participant's speech -> first agent audio at the participant")
    for c in configs:
        arr = np.array(segs[c])
        print(f"room path, {c} worker: {summary(totals[c])}")
        for i, name in enumerate(SEGMENTS):
            col = arr[:, i] if len(arr) else []
            print(f"    {name:22s} p50 {ms(pct(col, 50))} ms  p95 {ms(pct(col, 95))} ms")
        outside = arr[:, 0] + arr[:, 1] + arr[:, 3] + arr[:, 4] if len(arr) else []
        print(f"    {'all but the model':22s} p50 {ms(pct(outside, 50))} ms  p95 {ms(pct(outside, 95))} ms")
    print(f"direct path (genai client -> server): {summary(direct_totals)}")
    print(f"    {'model':22s} p50 {ms(pct(direct_model, 50))} ms  p95 {ms(pct(direct_model, 95))} ms")
    for c in configs:
        print(f"ratio room ({c}) / direct: p50 {ratio(pct(totals[c], 50), pct(direct_totals, 50))}  "
              f"p95 {ratio(pct(totals[c], 95), pct(direct_totals, 95))}")
    # a turn whose every segment could not be dated is left out: say so when that thins a path
    short = {name: len(v) for name, v in [*totals.items(), ("direct", direct_totals)] if len(v) < min(args.turns, 20)}
    if short:
        print("warning: fewer than " + str(min(args.turns, 20)) + " measured turns on "
              + ", ".join(f"{k} ({n})" for k, n in short.items()) + ": p95 rests on few samples")


if __name__ == "__main__":
    asyncio.run(main())
