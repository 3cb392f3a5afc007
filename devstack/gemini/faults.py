"""Connection faults the offline server can inject, scripted or at random.

A fault is one of four things the service does to a connection:
- ``go_away``: a ``goAway{timeLeft}`` message; the connection keeps serving (a reply in
  progress goes on) and the server closes it itself at the deadline if the client is
  still there (close code `OfflineGeminiServer.deadline_close`).
- ``close``: a close frame with ``code`` (1011, 1000, 1007, 1008...) and ``reason``.
- ``drop``: the TCP connection is aborted with no close frame; the client sees 1006
  (connection reset / no close frame received).
- ``stall``: the socket stays open, the server stops sending and stops answering (a hung
  backend); websocket pings may still be answered by aiohttp.

at one of four moments (``during``):
- ``reply``: ``after_s`` seconds of reply audio into the reply to turn ``turn`` (0: before
  anything of the turn is sent; past the reply's end: at its end, before turnComplete).
  In TEXT modality it fires after the first text part (``after_s`` > 0) or before it (0).
- ``after_turn``: after the turn's turnComplete (and its sessionResumptionUpdate).
- ``setup``: after the setup message is read, before setupComplete (close/drop/stall);
  ``count`` connections in a row are hit.
- ``tool_call``: ``after_s`` seconds after the toolCall was sent, or when the toolResponse
  arrives if that is earlier (``after_s=None``: when the toolResponse arrives, before the
  model answers it).

``turn`` counts per conversation from 1 (a resumed session continues its conversation's
numbering); ``turn=None`` matches the next such moment of any turn. Every fault is
one-shot: once fired it is spent, so a client that reconnects is not faulted again by the
same line. Each firing is logged in `OfflineGeminiServer.fault_log` as a `FaultEvent`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Iterable

KINDS = ("go_away", "close", "drop", "stall")
MOMENTS = ("reply", "after_turn", "setup", "tool_call")
SETUP_KINDS = ("close", "drop", "stall")  # no goAway before setupComplete
DEFAULT_CLOSE_REASONS = {
    1000: "Session is going away.",
    1007: "Request contains an invalid argument.",
    1008: "Operation is not implemented, or supported, or enabled.",
    1011: "Internal error encountered.",
}


def close_reason(code: int) -> str:
    return DEFAULT_CLOSE_REASONS.get(code, "Internal error encountered.")


def format_time_left(seconds: float) -> str:
    """A protobuf Duration as JSON: '3s', '0.5s'."""
    return f"{seconds:g}s"


@dataclass
class Fault:
    kind: str
    during: str
    turn: int | None = None
    after_s: float | None = 0.0
    time_left: str = "10s"  # go_away
    code: int = 1011  # close
    reason: str = ""  # close; default from the code
    count: int = 1  # setup faults: how many connections in a row
    source: str = "script"  # "script" | "random"
    fired: int = 0  # times fired

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {KINDS}")
        if self.during not in MOMENTS:
            raise ValueError(f"fault moment during={self.during!r} is not one of {MOMENTS}")
        if self.during == "setup":
            if self.kind not in SETUP_KINDS:
                raise ValueError(f"a setup fault must be one of {SETUP_KINDS}, not {self.kind!r}")
            if self.turn is not None:
                raise ValueError("a setup fault has no turn (it hits the next connections)")
            if self.count < 1:
                raise ValueError(f"setup fault count must be >= 1, got {self.count}")
        elif self.count != 1:
            raise ValueError("count applies to setup faults only; turn faults fire once")
        if self.turn is not None and self.turn < 1:
            raise ValueError(f"turn numbers start at 1, got {self.turn}")
        if self.after_s is not None and self.after_s < 0:
            raise ValueError(f"after_s must be >= 0, got {self.after_s}")
        if self.after_s is None and self.during != "tool_call":
            self.after_s = 0.0
        if not self.reason:
            self.reason = close_reason(self.code)

    @property
    def spent(self) -> bool:
        return self.fired >= self.count

    def matches(self, during: str, turn: int | None) -> bool:
        return not self.spent and self.during == during and (self.turn is None or self.turn == turn)


@dataclass
class FaultEvent:
    """One fault as fired: what, where, when (time.monotonic())."""

    at: float
    kind: str
    during: str
    session: int  # LiveSession.index
    conversation: str | None
    turn: int | None
    source: str  # "script" | "random" | "lifetime"
    code: int | None = None  # close
    time_left: str | None = None  # go_away
    after_s: float | None = None


class RandomFaults:
    """Seeded random faults for soak runs.

    The plan (gap before each fault, its moment, kind, `after_s`, close code) is drawn
    from `random.Random(seed)` alone, so the same seed plans the same faults in the same
    order (`planned(n)`). Timing follows the traffic: `gap_s` (exponential, mean
    `mean_interval_s`) after the previous fault fired (or after `start`), the next
    planned fault is armed and fires at the next moment of its kind in any session. An
    armed fault whose moment does not come within `patience_s` (default 3 x the mean
    interval; e.g. a setup while every connection stays up, a tool_call without tools) is
    skipped (`skipped`) and the next one armed at once, so the faults keep coming.
    """

    def __init__(self, seed: int = 1, mean_interval_s: float = 5.0, kinds: Iterable[str] = KINDS,
                 moments: Iterable[str] = ("reply", "after_turn", "setup"), close_codes: Iterable[int] = (1011,),
                 time_left_s: tuple[float, float] = (1.0, 5.0), max_after_s: float = 2.0,
                 patience_s: float | None = None) -> None:
        self.kinds = tuple(kinds)
        self.moments = tuple(moments)
        self.close_codes = tuple(close_codes)
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"random_faults kinds: {k!r} is not one of {KINDS}")
        for m in self.moments:
            if m not in MOMENTS:
                raise ValueError(f"random_faults moments: {m!r} is not one of {MOMENTS}")
        if not self.kinds or not self.moments:
            raise ValueError("random_faults needs at least one kind and one moment")
        if self.moments == ("setup",) and not set(self.kinds) & set(SETUP_KINDS):
            raise ValueError(f"setup faults can only be {SETUP_KINDS}")
        if mean_interval_s <= 0:
            raise ValueError(f"mean_interval_s must be > 0, got {mean_interval_s}")
        self.seed = seed
        self.mean_interval_s = mean_interval_s
        self.time_left_s = time_left_s
        self.max_after_s = max_after_s
        self.patience_s = 3 * mean_interval_s if patience_s is None else patience_s
        self.skipped: list[Fault] = []
        self._rng = random.Random(seed)
        self._plan: list[tuple[float, Fault]] = []
        self._next = 0  # index in _plan of the next fault to arm
        self._due_at = time.monotonic()  # reset by start()
        self.enabled = True

    def start(self) -> None:
        self._due_at = time.monotonic() + self._planned_at(self._next)[0]

    def stop(self) -> None:
        self.enabled = False

    def _draw(self) -> tuple[float, Fault]:
        rng = self._rng
        gap = rng.expovariate(1.0 / self.mean_interval_s)
        during = rng.choice(self.moments)
        kinds = [k for k in self.kinds if during != "setup" or k in SETUP_KINDS]
        if not kinds:  # e.g. only go_away asked for, moment setup drawn
            during = rng.choice([m for m in self.moments if m != "setup"])
            kinds = list(self.kinds)
        kind = rng.choice(kinds)
        after_s = round(rng.uniform(0.0, self.max_after_s), 3)
        code = rng.choice(self.close_codes)
        time_left = format_time_left(round(rng.uniform(*self.time_left_s), 2))
        fault = Fault(kind=kind, during=during, after_s=after_s if during in ("reply", "tool_call") else 0.0,
                      code=code, time_left=time_left, source="random")
        return gap, fault

    def _planned_at(self, i: int) -> tuple[float, Fault]:
        while len(self._plan) <= i:
            self._plan.append(self._draw())
        return self._plan[i]

    def planned(self, n: int) -> list[Fault]:
        """The first n faults of the plan (kind, during, after_s, code, time_left)."""
        return [self._planned_at(i)[1] for i in range(n)]

    @property
    def fired(self) -> int:
        return self._next - len(self.skipped)

    def take(self, during: str) -> Fault | None:
        """The armed fault if it is due and its moment is `during` (then it is spent)."""
        now = time.monotonic()
        if not self.enabled or now < self._due_at:
            return None
        _, fault = self._planned_at(self._next)
        if fault.during != during:
            if now - self._due_at > self.patience_s:  # its moment is not coming: the next one
                self.skipped.append(fault)
                self._next += 1
                self._due_at = now
                return self.take(during)
            return None
        fault.fired += 1
        self._next += 1
        self._due_at = now + self._planned_at(self._next)[0]
        return fault


@dataclass
class FaultBook:
    """The faults a script has set, looked up at each moment (first match wins)."""

    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def take(self, during: str, turn: int | None) -> Fault | None:
        for f in self.faults:
            if f.matches(during, turn):
                f.fired += 1
                return f
        return None

    def pending(self) -> list[Fault]:
        return [f for f in self.faults if not f.spent]
