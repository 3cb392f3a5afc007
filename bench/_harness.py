"""Shared pieces of the benchmarks: the local stack with named worker configurations, a
caller, spoken audio, trace reading and statistics.

Clocks: the caller stamps with time.perf_counter(), the offline Gemini server with
time.monotonic(), the agent's trace with time.monotonic(). On Linux both are
clock_gettime(CLOCK_MONOTONIC), one clock for every process on the machine;
`check_clocks()` verifies it before any figure is computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devstack.stack import LocalStack, WorkerProcess  # noqa: E402
from tests.support.audio import read_wav, resample, speech_wav, trim_silence  # noqa: E402
from tests.support.caller import RATE, Caller, caller_token  # noqa: E402

LOUD = 500  # int16 peak that counts as sound, everywhere (caller, agent, server)

# A headset caller: no echo warm-up, no gain control changing the audio we time.
HEADSET = {
    "AGENT_AUDIO__ECHO_WARMUP_S": "0",
    "AGENT_AUDIO__AUTO_GAIN_CONTROL": "false",
    "AGENT_WORKER__NUM_IDLE_PROCESSES": "1",
    # 2 cores: a worker above its load threshold is not offered rooms; benches measure latency
    "AGENT_WORKER__LOAD_THRESHOLD": "1.0",
}

CONFIGS = {
    # the product's default (latency.mode: low)
    "tuned": {"AGENT_LATENCY__MODE": "low"},
    # the agents framework's and the plugin's own sizes
    "framework": {"AGENT_LATENCY__MODE": "framework"},
}

_rooms = itertools.count(1)


def check_clocks() -> None:
    for name in ("perf_counter", "monotonic"):
        info = time.get_clock_info(name)
        if "CLOCK_MONOTONIC" not in info.implementation or "RAW" in info.implementation:
            raise SystemExit(f"time.{name} is {info.implementation}, not CLOCK_MONOTONIC: "
                             "the cross-process timestamps would not compare")
    a, b, c = time.monotonic(), time.perf_counter(), time.monotonic()
    if not a <= b <= c:
        raise SystemExit("perf_counter and monotonic disagree")


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def ms(x: float) -> str:
    return "   n/a" if x != x else f"{x * 1000:6.1f}"


def summary(values) -> str:
    return f"p50 {ms(pct(values, 50))} ms  p95 {ms(pct(values, 95))} ms  max {ms(max(values) if len(values) else float('nan'))} ms  (n={len(values)})"


def ratio(a: float, b: float) -> str:
    return "  n/a" if not b or b != b or a != a else f"{a / b:5.2f}x"


_speech_cache: dict[str, np.ndarray] = {}


def speech(text: str, rate: int = RATE) -> np.ndarray:
    """espeak-ng saying `text`, trimmed, at `rate`."""
    key = f"{text}|{rate}"
    if key not in _speech_cache:
        d = Path(tempfile.mkdtemp(prefix="bench-speech-"))
        pcm, native = read_wav(speech_wav(text, d / "s.wav"))
        _speech_cache[key] = trim_silence(resample(pcm, native, rate), rate)
    return _speech_cache[key]


def last_loud_offset(pcm: np.ndarray, rate: int) -> float:
    """Seconds from the end of `pcm` back to its last loud sample."""
    idx = np.nonzero(np.abs(pcm.astype(np.int32)) >= LOUD)[0]
    return (len(pcm) - (idx[-1] + 1)) / rate if len(idx) else 0.0


def tone(freq: float, seconds: float, rate: int = 24000, amp: int = 12000) -> bytes:
    n = int(rate * seconds)
    return (np.sin(2 * np.pi * freq * np.arange(n) / rate) * amp).astype(np.int16).tobytes()


# ---- the stack ------------------------------------------------------------------------------
@dataclass
class Bench:
    stack: LocalStack
    workdir: Path
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    callers: list[Caller] = field(default_factory=list)

    def trace_base(self, name: str) -> str:
        return str(self.workdir / f"trace-{name}")

    async def start_worker(self, name: str, env: dict[str, str], *, trace: bool = True) -> WorkerProcess:
        agent_env = {**HEADSET, **env, "AGENT_AGENT__NAME": f"bench-{name}"}
        if trace:
            agent_env["AGENT_LATENCY__TRACE_FILE"] = self.trace_base(name)
        w = await self.stack.start_worker(agent_env, timeout=90)
        self.workers[name] = w
        return w

    async def join(self, config: str, *, identity: str = "caller", room: str | None = None) -> Caller:
        room = room or f"bench-{config}-{next(_rooms)}"
        caller = Caller(identity)
        token = caller_token(self.stack.livekit.api_key, self.stack.livekit.api_secret, room,
                             identity, agent_name=f"bench-{config}")
        await caller.join(self.stack.livekit.url, token)
        caller.room_name = room  # type: ignore[attr-defined]
        self.callers.append(caller)
        return caller

    def gemini_session_for(self, since: float):
        """The offline-Gemini session opened after `since` (monotonic)."""
        sessions = [s for s in self.stack.gemini.active_sessions if s.connected_at >= since]
        return sessions[-1] if sessions else None

    def trace(self, config: str, room: str) -> list[dict]:
        out: list[dict] = []
        for path in glob.glob(f"{self.trace_base(config)}.*.{room}.jsonl"):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    with contextlib.suppress(json.JSONDecodeError):
                        out.append(json.loads(line))
        out.sort(key=lambda e: e["t"])
        return out


@contextlib.asynccontextmanager
async def bench_stack(prefix: str, **stack_options):
    check_clocks()
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    stack = LocalStack(workdir=workdir, base_env=env, **stack_options)
    await stack.start()
    b = Bench(stack, workdir)
    try:
        yield b
    finally:
        for c in b.callers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.leave(), 5)
        await stack.stop()


async def wait_listening(caller: Caller, timeout: float = 30.0) -> None:
    await caller.wait_agent(timeout)
    await caller.wait_for(lambda: "listening" in [s for _, s in caller.agent_states], timeout,
                          "the agent to listen")
    await asyncio.sleep(0.5)


async def wait_flush(b: Bench, config: str, room: str, kinds: set[str], since: float, timeout: float = 3.0) -> list[dict]:
    """The agent's trace for `room` once it holds events of every kind in `kinds` after
    `since` (the trace is flushed every 0.25 s)."""
    deadline = time.monotonic() + timeout
    while True:
        tr = b.trace(config, room)
        have = {e["ev"] for e in tr if e["t"] >= since}
        if kinds <= have or time.monotonic() > deadline:
            return tr
        await asyncio.sleep(0.1)


# ---- mapping audio positions across hops -------------------------------------------------
def positions(events: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, start positions, durations) of a list of audio events, positions cumulative."""
    t = np.array([e["t"] for e in events], dtype=float)
    d = np.array([e["dur"] for e in events], dtype=float)
    start = np.concatenate([[0.0], np.cumsum(d)[:-1]]) if len(d) else np.zeros(0)
    return t, start, d


def input_latencies(trace: list[dict], t0: float, t1: float) -> list[float]:
    """Agent-added input latency of each frame that arrived in [t0, t1): from its first
    sample being in the room (the frame's arrival minus all but its last 10 ms, which the
    SDK's stream collected in 10 ms ticks) to the model-socket send of the chunk that holds
    that sample."""
    ins = [e for e in trace if e["ev"] == "in"]
    sents = [e for e in trace if e["ev"] == "sent"]
    if not ins or not sents:
        return []
    ti, si, di = positions(ins)
    ts, ss, ds = positions(sents)
    ends = ss + ds
    out = []
    for t, s, d in zip(ti, si, di):
        if not (t0 <= t < t1):
            continue
        # the chunk whose span holds position s: the first ending after it
        k = int(np.argmax(ends > s + 1e-6)) if (ends > s + 1e-6).any() else -1
        if k < 0:
            continue
        avail = t - max(d - 0.010, 0.0)
        out.append(ts[k] - avail)
    return out


def output_latencies(trace: list[dict], t0: float, t1: float) -> tuple[list[float], list[float]]:
    """Agent-added output latency of one reply whose model audio arrived in [t0, t1).

    Each played frame is dated when its first sample leaves the sender (capture time plus
    the audio queued ahead of it). Its ideal time is when a zero-buffer real-time player
    could send that sample: the model chunk holding it arrived at a_k, and no sample plays
    before the one before it: ideal(p) = max over chunks k starting at or before p of
    a_k + (p - start_k). Returns (all frames, the reply's first frame)."""
    model = [e for e in trace if e["ev"] == "model" and t0 <= e["t"] < t1]
    if not model:
        return [], []
    plays = [e for e in trace if e["ev"] == "play" and e["t"] >= model[0]["t"] - 0.001 and e["t"] < t1 + 2.0]
    ta, sa, da = positions(model)
    tp, sp, dp = positions(plays)
    total = sa[-1] + da[-1]
    base = ta - sa  # a_k - start_k
    running = np.maximum.accumulate(base)
    out = []
    for t, p, e in zip(tp, sp, plays):
        if p >= total - 1e-6:
            break
        k = int(np.searchsorted(sa, p + 1e-9, side="right")) - 1
        ideal = running[k] + p
        out.append(t + e["q"] - ideal)
    return out, out[:1]


def server_audio_in(session) -> list[tuple[float, bytes]]:
    return [(m.at, m.body.data) for m in session.received if m.kind == "audio"]


def server_audio_out(session) -> list[tuple[float, bytes]]:
    import base64

    out = []
    for m in session.sent:
        for part in ((m.content.get("modelTurn") or {}).get("parts") or []):
            data = (part.get("inlineData") or {}).get("data")
            if data:
                out.append((m.at, base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_")
                            if ("-" in data or "_" in data) else base64.b64decode(data)))
    return out


def peak(pcm: bytes) -> int:
    a = np.frombuffer(pcm, dtype=np.int16)
    return int(np.abs(a.astype(np.int32)).max()) if len(a) else 0
