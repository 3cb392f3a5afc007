"""Issue 5: capacity. Concurrent rooms on this machine, each with a person who talks (an
espeak-ng sentence of 2.0-2.2 s every 6.5 s, rooms out of phase) and the agent answering
(the offline model echoes the sentence back at real time), rising until quality breaks.

Every component runs in its own process so its CPU can be told apart:
  agent      `python agent.py start` (the worker and every child: forkserver, job
             processes), measured over the worker's whole process tree with psutil
  livekit    `python -m devstack.livekit` (local LiveKit server, RTP pass-through)
  gemini     `python -m devstack.gemini` (offline Gemini Live server, echo replies)
  callers    this process (the real rtc SDK, one Room per person)
  other      every other process on the machine (anything else running meanwhile)

Both job executors of the agents framework (process: one process per call; thread: calls
as threads of the worker process) are measured one after the other in the same run, each
on its own fresh worker, with the same rooms and speech; `--variant` adds a worker with other
settings, compared with its executor's ramp at equal load.

Memory: PSS summed over the worker's process tree (shared pages divided among their
sharers), per call at each step, and the slope between the first and last step: what one
more call costs once the fixed part (worker, forkserver, idle processes) is paid.

Quality per step, at the people (10 ms frames as the SDK delivers them):
  missed   a sentence with no reply (no loud agent frame before the next sentence or 4 s)
  lost     10 ms frames of the reply that were late or lost: silent frames inside the
           reply where the sentence (band-limited like the 16 kHz path) is clearly loud
           within +-30 ms, plus the reply's loud span growing more than 20 ms beyond the
           sentence's (the echo is the sentence itself, so any difference is the path's)
  cut      the reply still playing when the person's next sentence began (latency so
           large that the turns collide)
  latency  end of the sentence (its last frame sent) -> first loud reply frame at the
           person; includes the model's 500 ms end-of-speech silence
  dry      (--trace) 10 ms frames inside replies for which the agent's own WebRTC source ran
           dry, from the agent's latency trace. Counted over whole replies, not only where
           the sentence is loud, so it can exceed `lost`; lost frames beyond it were lost
           between the agent's sender and the person (local server, callers, scheduling)
A step is clean with no missed turn, no room left without an agent, not one lost frame, no
cut reply, and latency p95 within 1.5x the first step's p95 + 100 ms; good allows up to
0.5 % of reply frames lost (isolated 10 ms gaps). The ramp goes on while steps are good.

    python bench/capacity.py [--executors process,thread] [--levels 2,4,6,8,12,16,20,24,28,32]
                             [--window 20] [--soak 600 [--soak-executor thread] [--soak-rooms N]]
                             [--variant LABEL:KEY=VALUE[,KEY=VALUE...]] [--trace] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import itertools
import json
import math
import os
import random
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from _harness import LOUD, ROOT, check_clocks, pct, speech, wait_listening
from devstack.livekit import load_config
from devstack.stack import LocalStack, WorkerProcess
from tests.support.audio import resample
from livekit import rtc
from tests.support.caller import RATE, Caller, caller_token

SENTENCES = [
    "Please book a table for two at seven.",
    "When does the store on Main Street open?",
    "I would like to change my delivery address.",
    "Can you read me my last three messages?",
]
PERIOD_S = 6.5  # one sentence per room every PERIOD_S
REPLY_WAIT_S = 4.0  # a reply must start and end within this after the sentence
SPF = RATE // 100
ALIGN = 3  # frames of alignment tolerance between the sentence and its echo
STRETCH_OK = 2  # a reply up to 20 ms longer than the sentence is the jitter buffer adapting
DEBUG = bool(os.environ.get("CAPACITY_DEBUG"))

# LiveKit's published guidance for agent servers (docs.livekit.io, "Deploying to
# production" / load testing): 10-25 concurrent sessions on 4 cores and 8 GB; a load test
# of 30 agents peaked near 3.8 cores and 2.8 GB.
GUIDE = {
    "guidance, low (10 on 4 cores, 8 GB)": (10 / 4, 8192 / 10),
    "guidance, high (25 on 4 cores, 8 GB)": (25 / 4, 8192 / 25),
    "load test (30 at 3.8 cores, 2.8 GB)": (30 / 3.8, 2800 / 30),
}
TARGET_FACTOR = 2.5  # the density target per core, against the load test (strictest)
TARGET_MB = 100.0

# agent worker environment: a headset caller (no echo warm-up, no gain control), no
# greeting (every reply answers a sentence), and the load shedding threshold at its top so
# the ramp, not the host-wide CPU figure (which here includes the servers and the callers),
# finds the limit; a refused room still shows up as "no agent".
AGENT_ENV = {
    "AGENT_AUDIO__ECHO_WARMUP_S": "0",
    "AGENT_AUDIO__AUTO_GAIN_CONTROL": "false",
    "AGENT_AGENT__GREET": "false",
    "AGENT_WORKER__LOAD_THRESHOLD": "1.0",
}


# ---- servers in their own processes -------------------------------------------------------
class ServerProcess:
    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.args, self.log, self.env = name, args, log, env
        self.proc: asyncio.subprocess.Process | None = None
        self.ready_line = ""

    async def start(self, timeout: float = 30.0) -> str:
        err = open(self.log, "wb")  # noqa: SIM115 - handed to the child
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.args, cwd=str(ROOT), env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=err, start_new_session=True)
        err.close()
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            line = b""
        self.ready_line = line.decode().strip()
        if "ready" not in self.ready_line:
            await self.stop()
            raise RuntimeError(f"{self.name} did not start: {self.log.read_text(errors='replace')[-2000:]}")
        return self.ready_line

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.returncode is None:
            await self.proc.wait()


# ---- CPU and memory of process trees -------------------------------------------------------
def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_s(pid: int) -> float:
    """CPU seconds of a process tree; ended children are counted through their reaper."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def own_cpu_s() -> float:
    """CPU seconds of this process alone (the servers and workers are its children)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def memory_mb(pid: int) -> tuple[float, float, int]:
    """(RSS sum, PSS sum, process count) of a process tree. RSS counts every page a
    process maps, so pages shared with the forkserver and between job processes are
    counted once per process; PSS divides shared pages among their sharers and sums to
    the physical memory the tree really holds."""
    rss = pss = 0.0
    n = 0
    for p in tree(pid):
        with contextlib.suppress(psutil.Error):
            m = p.memory_full_info()
            rss += m.rss
            pss += getattr(m, "pss", m.uss)
            n += 1
    return rss / 2**20, pss / 2**20, n


def all_cpu_s() -> dict[int, float]:
    out = {}
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


@dataclass
class Meter:
    pids: dict[str, int]
    t: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    all: dict[int, float] = field(default_factory=dict)

    def snap(self) -> Meter:
        m = Meter(self.pids, time.monotonic())
        m.cpu = {k: cpu_s(pid) for k, pid in self.pids.items()}
        m.cpu["callers"] = own_cpu_s()
        m.all = all_cpu_s()
        return m

    def cores(self, earlier: Meter) -> dict[str, float]:
        dt = self.t - earlier.t
        out = {k: (self.cpu[k] - earlier.cpu[k]) / dt for k in self.cpu}
        # every other process on the machine (per-process accounting: this VM's /proc/stat
        # totals disagree with it, so the machine-wide figure is not used)
        mine = {p.pid for k in self.pids.values() for p in tree(k)} | {os.getpid()}
        out["other"] = sum(c - earlier.all[pid] for pid, c in self.all.items()
                           if pid in earlier.all and pid not in mine) / dt
        return out


# ---- the people ---------------------------------------------------------------------------
@dataclass
class Utterance:
    pcm: np.ndarray
    span: int  # 10 ms frames from the reply's first loud frame to its last, inclusive
    clear: np.ndarray  # per frame of that span: the sentence is clearly loud within +-30 ms


def peaks(frames: list[np.ndarray]) -> np.ndarray:
    return np.array([int(np.abs(a.astype(np.int32)).max()) if len(a) else 0 for a in frames])


def utterance(text: str) -> Utterance:
    """The sentence, and what its echo must sound like at the person: the path to the model
    is 16 kHz (nothing above 8 kHz comes back), so the reference is band-limited the same way."""
    pcm = speech(text)
    echo = resample(resample(pcm, RATE, 16000), 16000, RATE)
    p = peaks([echo[i:i + SPF] for i in range(0, len(echo), SPF)])
    idx = np.nonzero(p >= LOUD)[0]
    span = p[idx[0]: idx[-1] + 1]
    # clearly loud (2x the threshold) on every frame within +-3 frames: a silent frame there
    # cannot be the sentence's own pause, even with the 10 ms grids a frame apart
    strong = span >= 2 * LOUD
    clear = np.array([strong[max(0, i - ALIGN): i + ALIGN + 1].all() for i in range(len(span))])
    return Utterance(pcm, len(span), clear)


class Person(Caller):
    """tests/support/caller.py's participant with coarser Python-side frames, so the
    callers' own CPU leaves more of the machine to what is measured: the microphone
    hands 20 ms to the SDK at a time and the agent's audio is read 50 ms at a time. The
    SDK still sends 20 ms Opus packets and decodes 10 ms at a time, as with a browser; each
    50 ms read is split back into 10 ms frames, dated at their own playout time."""

    MIC_MS = 20
    READ_MS = 50

    def __init__(self, identity: str) -> None:
        super().__init__(identity)
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=60)

    async def _listen(self, track: rtc.Track) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=self.READ_MS):
            now = time.perf_counter()
            a = np.frombuffer(ev.frame.data, dtype=np.int16)
            k = len(a) // SPF
            for j in range(k):
                self.heard.frames.append((now - (k - 1 - j) * 0.01, a[j * SPF:(j + 1) * SPF].copy()))

    async def _microphone(self) -> None:
        spf = RATE * self.MIC_MS // 1000
        next_at = time.perf_counter()
        silence = np.zeros(spf, np.int16)
        while True:
            chunk = self._pending[:spf]
            if len(chunk):
                self._pending = self._pending[spf:]
                if len(chunk) < spf:
                    chunk = np.concatenate([chunk, silence[: spf - len(chunk)]])
                if not len(self._pending):
                    self.speech_end_at = time.perf_counter()
                    self._spoken.set()
            else:
                chunk = silence
            await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, spf))
            next_at += self.MIC_MS / 1000
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


@dataclass
class Turn:
    room: int
    said_at: float
    ended_at: float
    latency: float | None
    lost: int = 0
    frames: int = 0
    cut: bool = False
    judged_at: float = 0.0


@dataclass
class Room:
    index: int
    caller: Caller
    has_agent: bool = False
    turns: list[Turn] = field(default_factory=list)
    task: asyncio.Task | None = None


async def talk(room: Room, utts: list[Utterance], stop: asyncio.Event) -> None:
    """Speak one sentence every PERIOD_S (open loop: the schedule never waits for the
    agent) and judge each reply from the frames heard before the next sentence."""
    c = room.caller
    rng = random.Random(room.index)
    next_at = time.perf_counter() + rng.uniform(0.5, PERIOD_S)
    k = room.index
    while not stop.is_set():
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        u = utts[k % len(utts)]
        k += 1
        said = time.perf_counter()
        c.say(u.pcm)
        ended = await c.wait_spoken()
        next_at = said + PERIOD_S
        judge_at = min(next_at, ended + REPLY_WAIT_S)
        await asyncio.sleep(max(0.0, judge_at - time.perf_counter()))
        heard = [(t, a) for t, a in c.heard.frames if ended <= t < judge_at]
        # keep memory flat over a long soak
        c.heard.frames = [(t, a) for t, a in c.heard.frames if t >= judge_at - 0.05]
        turn = Turn(room.index, said, ended, None, judged_at=time.perf_counter())
        if heard:
            m = peaks([a for _, a in heard]) >= LOUD
            idx = np.nonzero(m)[0]
            if len(idx):
                turn.latency = heard[idx[0]][0] - ended
                span = m[idx[0]: idx[-1] + 1]
                n = min(len(span), u.span)
                gaps = int((~span[:n] & u.clear[:n]).sum())  # silence where the sentence has sound
                late = max(0, len(span) - u.span - STRETCH_OK)  # the reply took longer than the sentence
                turn.frames = u.span
                turn.lost = gaps + late
                # still loud in the last 100 ms before the next sentence: the reply ran into it
                turn.cut = bool(m[-10:].any()) and judge_at >= next_at - 0.01
                if DEBUG:
                    print(f"  room {room.index}: span {len(span)} vs {u.span}, gaps {gaps}, "
                          f"latency {turn.latency * 1000:.0f} ms", flush=True)
        room.turns.append(turn)


class LoopLag:
    """How late this process's event loop wakes (the callers' own health)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.samples.append((now, now - t - 0.01))
            if len(self.samples) > 200000:
                del self.samples[:100000]

    def p99(self, t0: float, t1: float) -> float:
        return pct([d for t, d in self.samples if t0 <= t < t1], 99)


def agent_underruns(pattern: str, t0: float, t1: float) -> int:
    """10 ms frames of silence the agent's own WebRTC source played inside replies between
    t0 and t1, from its latency trace (`play` events: the audio queued ahead of each frame).
    A frame captured at t with q s queued and d s long keeps the source busy until t + q + d;
    the next frame arriving later than that means the source ran dry in between."""
    lost = 0
    for path in glob.glob(pattern):
        prev = None
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line being written
                if e.get("ev") != "play":
                    continue
                if prev is not None and t0 <= e["t"] <= t1 and e["t"] - prev["t"] < 0.3:  # same reply
                    dry = e["t"] - (prev["t"] + prev["q"] + prev["dur"])
                    if dry > 0.002:
                        lost += math.ceil(dry / 0.01)
                prev = e
    return lost


# ---- one step --------------------------------------------------------------------------------
@dataclass
class Step:
    executor: str
    rooms: int
    seconds: float
    turns: int
    missed: int
    no_agent: int
    lost: int
    frames: int
    cut: int
    lat: list[float]
    cores: dict[str, float]
    rss_mb: float
    pss_mb: float
    procs: int
    lag_p99: float
    full_reports: int
    underrun: int | None = None  # 10 ms frames the agent's WebRTC source ran dry (--trace)
    good: bool = False
    clean: bool = False

    @property
    def cpu_s_per_session_min(self) -> float:
        return self.cores["agent"] * 60 / self.rooms

    @property
    def sessions_per_agent_core(self) -> float:
        return self.rooms / self.cores["agent"] if self.cores["agent"] > 0 else float("nan")


LOST_OK = 0.005  # "good": at most 0.5 % of reply frames late or lost (5 ms per second)


def judge(step: Step, first: Step | None) -> bool:
    """good: every turn answered in time, at most LOST_OK of the reply frames late or lost,
    latency p95 within 1.5x the first step's + 100 ms. Step.clean adds: not one frame lost."""
    limit = 1.5 * pct(first.lat, 95) + 0.1 if first and first.lat else float("inf")
    step.clean = (step.turns > 0 and step.missed == 0 and step.no_agent == 0 and step.lost == 0
                  and step.cut == 0 and pct(step.lat, 95) <= limit)
    return (step.turns > 0 and step.missed == 0 and step.no_agent == 0 and step.cut == 0
            and step.lost <= LOST_OK * step.frames and pct(step.lat, 95) <= limit)


_phases = itertools.count(1)


class Phase:
    """One worker configuration, its rooms and its ramp."""

    def __init__(self, executor: str, stack: LocalStack, pids: dict[str, int], lk, utts, lag: LoopLag,
                 env: dict[str, str] | None = None) -> None:
        self.executor = executor  # its label: a job executor, or a --variant's name
        self.env = env if env is not None else {"AGENT_WORKER__JOB_EXECUTOR": executor}
        self.stack = stack
        self.pids = dict(pids)
        self.lk = lk
        self.utts = utts
        self.lag = lag
        self.worker: WorkerProcess | None = None
        self.rooms: list[Room] = []
        self.stop = asyncio.Event()
        self.name = f"capacity-{executor}"
        self.run = next(_phases)  # room names unique per phase: earlier rooms may linger
        self.steps: list[Step] = []
        self.reference: Step | None = None  # the step whose latency later steps are held to

    async def start(self) -> None:
        self.worker = await self.stack.start_worker(
            {**AGENT_ENV, **self.env, "AGENT_AGENT__NAME": self.name}, timeout=90)
        self.pids["agent"] = self.worker.proc.pid
        await asyncio.sleep(4.0)  # idle job processes prewarmed

    def full_reports(self) -> int:
        return self.worker.log_tail(100000).count("worker is at full capacity") if self.worker else 0

    async def add_room(self) -> None:
        i = len(self.rooms)
        caller = Person(f"person-{i}")
        room = Room(i, caller)
        self.rooms.append(room)
        token = caller_token(self.lk["key"], self.lk["secret"], f"{self.name}-{self.run}-{i}", caller.identity,
                             agent_name=self.name)
        await caller.join(self.lk["url"], token)
        try:
            await wait_listening(caller, timeout=30)
            room.has_agent = True
        except (asyncio.TimeoutError, AssertionError):
            pass
        room.task = asyncio.create_task(talk(room, self.utts, self.stop))

    async def grow(self, n: int) -> None:
        new = n - len(self.rooms)
        joins = []
        for _ in range(new):
            joins.append(asyncio.create_task(self.add_room()))
            await asyncio.sleep(0.25)
        await asyncio.gather(*joins)

    async def measure(self, seconds: float) -> Step:
        await asyncio.sleep(1.0)
        full0 = self.full_reports()
        m0 = Meter(self.pids).snap()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds / 2)
        rss, pss, procs = memory_mb(self.pids["agent"])
        await asyncio.sleep(seconds / 2)
        m1 = Meter(self.pids).snap()
        t1 = time.perf_counter()
        # turns spoken and judged inside the window
        turns = [t for r in self.rooms for t in r.turns if t0 <= t.said_at and t.judged_at <= t1]
        lat = [t.latency for t in turns if t.latency is not None]
        step = Step(
            self.executor, len(self.rooms), m1.t - m0.t, len(turns),
            sum(t.latency is None for t in turns), sum(not r.has_agent for r in self.rooms),
            sum(t.lost for t in turns), sum(t.frames for t in turns), sum(t.cut for t in turns),
            lat, m1.cores(m0), rss, pss, procs, self.lag.p99(t0, t1), self.full_reports() - full0)
        if trace := self.worker.env.get("AGENT_LATENCY__TRACE_FILE"):  # --trace
            step.underrun = agent_underruns(f"{trace}.*.{self.name}-{self.run}-*.jsonl", t0, t1)
        step.good = judge(step, self.reference or (self.steps[0] if self.steps else None))
        self.steps.append(step)
        return step

    async def close(self) -> None:
        self.stop.set()
        for r in self.rooms:
            if r.task:
                r.task.cancel()
        for r in self.rooms:
            if r.task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await r.task
        await asyncio.gather(*(asyncio.wait_for(r.caller.leave(), 5) for r in self.rooms), return_exceptions=True)
        if self.worker:
            await self.worker.stop()
            self.stack.workers.remove(self.worker)


# ---- printing --------------------------------------------------------------------------------
HEADER = (f"{'exec':7} {'rooms':>5} {'turns':>5} {'miss':>4} {'noag':>4} {'lost':>9} {'dry':>4} {'cut':>3} "
          f"{'lat p50':>7} {'p95':>6} │ {'agent':>5} {'CPU-s/':>6} {'RSS MB':>6} {'PSS MB':>6} {'procs':>5} │ "
          f"{'lk':>4} {'gem':>4} {'call':>4} {'othr':>4} {'lag99':>5} {'full':>4}  verdict")
SUBHEAD = (f"{'':7} {'':>5} {'':>5} {'':>4} {'':>4} {'frames':>9} {'':>4} {'':>3} {'ms':>7} {'ms':>6} │ "
           f"{'cores':>5} {'sessmn':>6} {'/sess':>6} {'/sess':>6} {'':>5} │ {'cores (own processes)':>19} "
           f"{'ms':>5} {'rep':>4}")


def row(s: Step) -> str:
    c = s.cores
    lost = f"{s.lost}/{s.frames}"
    dry = "-" if s.underrun is None else str(s.underrun)
    return (f"{s.executor:7} {s.rooms:5d} {s.turns:5d} {s.missed:4d} {s.no_agent:4d} {lost:>9} {dry:>4} {s.cut:3d} "
            f"{pct(s.lat, 50) * 1000:7.0f} {pct(s.lat, 95) * 1000:6.0f} │ {c['agent']:5.2f} "
            f"{s.cpu_s_per_session_min:6.2f} {s.rss_mb / s.rooms:6.0f} {s.pss_mb / s.rooms:6.0f} {s.procs:5d} │ "
            f"{c['livekit']:4.2f} {c['gemini']:4.2f} {c['callers']:4.2f} {c['other']:4.2f} "
            f"{s.lag_p99 * 1000:5.0f} {s.full_reports:4d}  {'clean' if s.clean else 'good' if s.good else 'BROKEN'}")


def best(steps: list[Step]) -> Step | None:
    good = []
    for s in steps:
        if not s.good:
            break
        good.append(s)
    return good[-1] if good else None


def best_clean(steps: list[Step]) -> Step | None:
    clean = [s for s in steps[: steps.index(best(steps)) + 1] if s.clean] if best(steps) else []
    return clean[-1] if clean else None


PROJECT_AT = 25  # calls: the top of LiveKit's guidance for one 4-core agent server


def marginal_mb(steps: list[Step]) -> float | None:
    """PSS added per call between the first and the last measured step."""
    if len(steps) < 2 or steps[-1].rooms == steps[0].rooms:
        return None
    return (steps[-1].pss_mb - steps[0].pss_mb) / (steps[-1].rooms - steps[0].rooms)


def projected_mb(steps: list[Step], calls: int) -> float:
    """PSS per call at `calls`, from the first step and the measured slope."""
    slope = marginal_mb(steps) or 0.0
    return (steps[0].pss_mb + slope * (calls - steps[0].rooms)) / calls


def report(phases: dict[str, Phase]) -> None:
    print("\n" + "=" * 40 + " capacity " + "=" * 40)
    print(f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GB; one sentence "
          f"({min(len(u.pcm) for u in next(iter(phases.values())).utts) / RATE:.1f}-"
          f"{max(len(u.pcm) for u in next(iter(phases.values())).utts) / RATE:.1f} s) per room every {PERIOD_S} s")
    print(HEADER)
    print(SUBHEAD)
    for ph in phases.values():
        for s in ph.steps:
            print(row(s))
    print("lost = late/lost 10 ms reply frames / reply frames, at the people; dry = 10 ms frames inside "
          "replies the agent's own WebRTC source ran dry (--trace; '-' = not traced; whole replies, so it may exceed lost); agent = the worker's process tree; "
          "MB per session include the worker, forkserver and idle processes; lag99 = the callers' "
          "event-loop lag p99; full = times the worker reported itself full")

    bests = {name: best(ph.steps) for name, ph in phases.items()}
    print("\nHighest clean step (not one frame lost, no missed turn) per executor: " + ", ".join(
        f"{name} {c.rooms if (c := best_clean(ph.steps)) else 'none'}" for name, ph in phases.items()))
    print(f"Highest good step (<= {LOST_OK:.1%} of reply frames lost, no missed turn) per executor:")
    for name, b in bests.items():
        if b is None:
            print(f"  {name:7}: none")
            continue
        print(f"  {name:7}: {b.rooms} rooms; agent {b.cores['agent']:.2f} cores = "
              f"{b.cpu_s_per_session_min:.2f} CPU-s per session-minute = {b.sessions_per_agent_core:.1f} "
              f"sessions per agent core; {b.pss_mb / b.rooms:.0f} MB (PSS) / {b.rss_mb / b.rooms:.0f} MB (RSS sum) "
              f"per session; whole machine: {b.rooms / os.cpu_count():.1f} sessions per core, "
              f"of which livekit {b.cores['livekit']:.2f} + gemini {b.cores['gemini']:.2f} + callers "
              f"{b.cores['callers']:.2f} + other {b.cores['other']:.2f} cores")

    print("\nMemory as calls are added (PSS of the worker's process tree): the fixed part (worker, "
          "forkserver, idle processes) spreads over more calls; the slope is what one more call costs")
    for name, ph in phases.items():
        slope = marginal_mb(ph.steps)
        if slope is None:
            continue
        first = ph.steps[0]
        print(f"  {name:7}: {first.pss_mb:.0f} MB at {first.rooms} rooms, +{slope:.0f} MB per added call; "
              f"at {PROJECT_AT} calls {projected_mb(ph.steps, PROJECT_AT):.0f} MB per call")

    if "process" in phases and "thread" in phases:
        p, t = phases["process"].steps, phases["thread"].steps
        common = sorted({s.rooms for s in p if s.good} & {s.rooms for s in t if s.good})
        print("\nThread vs process executor at equal load (both good):")
        for n in common:
            sp = next(s for s in p if s.rooms == n)
            st = next(s for s in t if s.rooms == n)
            print(f"  {n:3d} rooms: CPU-s/session-min thread {st.cpu_s_per_session_min:.2f} / process "
                  f"{sp.cpu_s_per_session_min:.2f} = {st.cpu_s_per_session_min / sp.cpu_s_per_session_min:.2f}x;  "
                  f"MB/session (PSS) thread {st.pss_mb / n:.0f} / process {sp.pss_mb / n:.0f} = "
                  f"{st.pss_mb / sp.pss_mb:.2f}x;  latency p95 thread {pct(st.lat, 95) * 1000:.0f} / process "
                  f"{pct(sp.lat, 95) * 1000:.0f} ms")
        bp, bt = bests["process"], bests["thread"]
        if bp and bt:
            print(f"  highest good step: thread {bt.rooms} / process {bp.rooms} rooms = {bt.rooms / bp.rooms:.2f}x")

    for name, ph in phases.items():
        base = phases.get(ph.env.get("AGENT_WORKER__JOB_EXECUTOR", ""))
        if base is None or base is ph:
            continue
        print(f"\n{name} ({', '.join(f'{k}={v}' for k, v in ph.env.items())}) vs {base.executor} at equal load:")
        for s in ph.steps:
            b = next((x for x in base.steps if x.rooms == s.rooms), None)
            if b is not None:
                print(f"  {s.rooms:3d} rooms: CPU-s/session-min {s.cpu_s_per_session_min:.2f} / "
                      f"{b.cpu_s_per_session_min:.2f} = {s.cpu_s_per_session_min / b.cpu_s_per_session_min:.2f}x; "
                      f"lost frames {s.lost} / {b.lost}; latency p95 {pct(s.lat, 95) * 1000:.0f} / "
                      f"{pct(b.lat, 95) * 1000:.0f} ms")

    print("\nAgainst LiveKit's published guidance (agent server only; ours = the worker's process tree):")
    print(f"  {'':38} {'sessions/core':>13} {'MB/session':>10}")
    for label, (per_core, mb) in GUIDE.items():
        print(f"  {label:38} {per_core:13.2f} {mb:10.0f}")
    for name, b in bests.items():
        if b is None:
            continue
        print(f"  {'ours, ' + name + f' executor @ {b.rooms} rooms':38} {b.sessions_per_agent_core:13.2f} "
              f"{b.pss_mb / b.rooms:10.0f}   ratios: " + ", ".join(
                  f"{b.sessions_per_agent_core / pc:.1f}x / {mb / (b.pss_mb / b.rooms):.1f}x less"
                  for pc, mb in GUIDE.values()))
    print(f"  (ratios in the order of the rows above: density per core / memory per session)")
    lt = GUIDE["load test (30 at 3.8 cores, 2.8 GB)"][0]
    for name, b in bests.items():
        if b is None:
            continue
        print(f"  target {TARGET_FACTOR}x the load test's density = {TARGET_FACTOR * lt:.1f} sessions per core: "
              f"{name} {b.sessions_per_agent_core:.1f} ({'met' if b.sessions_per_agent_core >= TARGET_FACTOR * lt else 'NOT met'}); "
              f"< {TARGET_MB:.0f} MB per session: {b.pss_mb / b.rooms:.0f} at {b.rooms} "
              f"({'met' if b.pss_mb / b.rooms < TARGET_MB else 'NOT met'})"
              + (f", +{m:.0f} per added call ({'met' if m < TARGET_MB else 'NOT met'}), "
                 f"{projected_mb(phases[name].steps, PROJECT_AT):.0f} at {PROJECT_AT}"
                 if (m := marginal_mb(phases[name].steps)) is not None else "")
              + f"; whole machine {b.rooms} rooms on "
              f"{os.cpu_count()} cores = {b.rooms / os.cpu_count():.1f} per core "
              f"({b.rooms / os.cpu_count() / lt:.2f}x the load test)")


# ---- main ------------------------------------------------------------------------------------
async def start_servers(workdir: Path, env: dict[str, str], livekit_args: tuple[str, ...] = ()
                        ) -> tuple[dict[str, ServerProcess], dict[str, str]]:
    lk = ServerProcess("livekit", ["-m", "devstack.livekit", "--config", str(ROOT / "livekit.yaml"), "--port", "0",
                                   *livekit_args], workdir / "livekit.log", env)
    gm = ServerProcess("gemini", ["-m", "devstack.gemini", "--cert", str(workdir / "gemini" / "cert.pem")],
                       workdir / "gemini.log", env)
    (workdir / "gemini").mkdir()
    lk_line, gm_line = await asyncio.gather(lk.start(), gm.start())
    url = re.search(r"ready (\S+)", lk_line).group(1)
    key = re.search(r"api_key=(\S+)", lk_line).group(1)
    cfg = load_config(ROOT / "livekit.yaml")
    g_url = re.search(r"ready (\S+)", gm_line).group(1)
    bundle = re.search(r"ca_bundle=(\S+)", gm_line).group(1)
    from devstack.gemini.server import DEFAULT_API_KEY

    stack_env = {**env, "LIVEKIT_URL": url, "LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": cfg.keys[key],
                 "GOOGLE_API_KEY": DEFAULT_API_KEY, "GOOGLE_GEMINI_BASE_URL": g_url, "SSL_CERT_FILE": bundle}
    return {"livekit": lk, "gemini": gm}, stack_env


async def ramp(ph: Phase, levels: list[int], window: float) -> None:
    await ph.start()
    print(f"\n[{ph.executor}] worker up; ramping {levels}", flush=True)
    for n in levels:
        await ph.grow(n)
        step = await ph.measure(window)
        print(row(step), flush=True)
        if not step.good:
            break


async def soak(ph: Phase, seconds: float, minute: float = 60.0) -> list[Step]:
    print(f"\n[{ph.executor}] soak: {len(ph.rooms)} rooms held for {seconds:.0f} s", flush=True)
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end - 2:
        s = await ph.measure(min(minute, end - time.monotonic()) - 1.0)
        out.append(s)
        print(row(s), flush=True)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executors", default="process,thread", help="job executors to ramp, in order")
    ap.add_argument("--levels", default="2,4,6,8,12,16,20,24,28,32", help="concurrent rooms per step")
    ap.add_argument("--window", type=float, default=20.0, help="seconds measured per step")
    ap.add_argument("--soak", type=float, default=0.0, help="then hold the highest good level this long (s)")
    ap.add_argument("--soak-executor", default=None, help="executor for the soak (default: the product's)")
    ap.add_argument("--soak-rooms", type=int, default=0, help="soak at this many rooms, no ramp for it")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE...]",
                    help="also ramp a worker with these settings (the product's job executor unless one is "
                         "given), compared with that executor's own ramp, e.g. "
                         "20ms:AGENT_LATENCY__INPUT_FRAME_MS=20,AGENT_LATENCY__OUTPUT_FRAME_MS=20")
    ap.add_argument("--trace", action="store_true",
                    help="turn on the agent's latency trace and count the frames its own WebRTC source "
                         "ran dry (costs the agent some CPU)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra AGENT_* setting for every worker, e.g. AGENT_LATENCY__MODE=framework")
    args = ap.parse_args()
    check_clocks()
    levels = [int(x) for x in args.levels.split(",")]
    AGENT_ENV.update(dict(kv.split("=", 1) for kv in args.set))
    from agents.settings import load_settings

    product_executor = load_settings().worker.job_executor
    specs: dict[str, dict[str, str]] = {
        ex: {"AGENT_WORKER__JOB_EXECUTOR": ex} for ex in (x.strip() for x in args.executors.split(",")) if ex}
    for v in args.variant:
        label, _, kvs = v.partition(":")
        if not label or not kvs or label in specs:
            ap.error(f"--variant {v!r}: give LABEL:KEY=VALUE[,KEY=VALUE...] with a new label")
        specs[label] = {"AGENT_WORKER__JOB_EXECUTOR": product_executor,
                        **dict(kv.split("=", 1) for kv in kvs.split(","))}

    workdir = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    if args.trace:
        (workdir / "trace").mkdir()
        AGENT_ENV["AGENT_LATENCY__TRACE_FILE"] = str(workdir / "trace" / "agent")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    utts = [utterance(s) for s in SENTENCES]
    lag = LoopLag()
    lag_task = asyncio.create_task(lag.run())
    servers, stack_env = await start_servers(workdir, env)
    stack = LocalStack(workdir=workdir, base_env=stack_env)
    lk = {"url": stack_env["LIVEKIT_URL"], "key": stack_env["LIVEKIT_API_KEY"],
          "secret": stack_env["LIVEKIT_API_SECRET"]}
    pids = {"livekit": servers["livekit"].proc.pid, "gemini": servers["gemini"].proc.pid}
    print(f"work dir {workdir}; livekit pid {pids['livekit']}, gemini pid {pids['gemini']}, callers pid {os.getpid()}")
    print(HEADER)
    print(SUBHEAD)
    phases: dict[str, Phase] = {}
    soak_steps: list[Step] = []
    try:
        for ex, env in specs.items():
            ph = Phase(ex, stack, pids, lk, utts, lag, env)
            phases[ex] = ph
            try:
                await ramp(ph, levels, args.window)
            finally:
                await ph.close()
        if args.soak:
            ex = args.soak_executor or product_executor
            b = best(phases[ex].steps) if ex in phases else None
            n = args.soak_rooms or (b.rooms if b else 0)
            if n:
                # the highest good level again, on a fresh worker
                ref = phases[ex].steps[0] if ex in phases and phases[ex].steps else None
                ph = Phase(ex, stack, pids, lk, utts, lag, specs.get(ex))
                ph.reference = ref
                await ph.start()
                await ph.grow(n)
                soak_steps = await soak(ph, args.soak)
                await ph.close()
            else:
                print("no good level to soak at")
    finally:
        lag_task.cancel()
        await stack.stop()
        for s in servers.values():
            await s.stop()
    report(phases)
    if soak_steps:
        turns = sum(s.turns for s in soak_steps)
        print(f"\nSoak ({ex} executor, {soak_steps[0].rooms} rooms, {sum(s.seconds for s in soak_steps):.0f} s): "
              f"{turns} turns, missed {sum(s.missed for s in soak_steps)}, lost frames "
              f"{sum(s.lost for s in soak_steps)}/{sum(s.frames for s in soak_steps)}, cut "
              f"{sum(s.cut for s in soak_steps)}, latency p50 "
              f"{pct([x for s in soak_steps for x in s.lat], 50) * 1000:.0f} ms p95 "
              f"{pct([x for s in soak_steps for x in s.lat], 95) * 1000:.0f} ms, agent "
              f"{np.mean([s.cpu_s_per_session_min for s in soak_steps]):.2f} CPU-s/session-min, "
              f"PSS {soak_steps[0].pss_mb / soak_steps[0].rooms:.0f} -> {soak_steps[-1].pss_mb / soak_steps[-1].rooms:.0f} "
              f"MB/session; minutes good: {sum(s.good for s in soak_steps)}/{len(soak_steps)}")


if __name__ == "__main__":
    asyncio.run(main())
