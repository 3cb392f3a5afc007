"""Per-test scripting of the offline server's behaviour.

One `Script` hangs off the server (`server.script`) and is read at the moment each
decision is made, so tests may change it while sessions run. Turns are numbered from
1 per conversation; a resumed session continues its conversation's numbering.

Content directives (transcripts, replies, tool calls) apply every time a conversation
reaches that turn. Fault directives (`fault`, `stall_setups`, `fail_setups` and the
older `go_away_after_turn` / `close_after_turn` / `stall_on_turn`) fire once, then are
spent, so a client that reconnects is not faulted again by the same line of script.
See faults.py for the kinds and moments.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from .faults import Fault, FaultBook

_ids = itertools.count(1)


@dataclass
class ToolCallSpec:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # generated ("call-N") when not given

    def wire(self) -> dict:
        return {"id": self.id or f"call-{next(_ids)}", "name": self.name, "args": self.args}


@dataclass
class TurnPlan:
    transcript: str | None = None  # inputTranscription for the user's audio
    reply_text: str | None = None  # text reply / outputTranscription of the reply
    reply_audio: bytes | None = None  # 24 kHz PCM spoken instead of echo/synthesis
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    # legacy one-shot faults, fired after the turn completes (stall: instead of
    # answering); the Script helpers now file these as `Fault`s instead
    go_away: str | None = None
    close: tuple[int, str] | None = None
    stall: bool = False


class Script:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.transcripts: dict[int, str] = {}
        # names proactive audio answers to (proactive.py); empty: taken from the instructions
        self.agent_names: set[str] = set()
        self.turns: dict[int, TurnPlan] = {}
        # replies for turns with no plan of their own (e.g. a fixed greeting voice)
        self.default_reply_audio: bytes | None = None
        self.send_usage_metadata = True
        # stall right after setup: accept the socket, never send setupComplete
        # (sticky: every setup while True; `stall_setups(count)` for a number of them)
        self.stall_setup = False
        self._refusals: list[tuple[int, str]] = []
        self.faults = FaultBook()

    # ---- content ----------------------------------------------------------------
    def turn(self, n: int) -> TurnPlan:
        """The (mutable) plan for turn n, created on first use."""
        return self.turns.setdefault(n, TurnPlan())

    def on_turn(self, n: int, **fields: Any) -> TurnPlan:
        """Set fields of turn n's plan: transcript, reply_text, reply_audio, ..."""
        plan = self.turn(n)
        for k, v in fields.items():
            if not hasattr(plan, k):
                raise AttributeError(f"TurnPlan has no field {k!r}")
            setattr(plan, k, v)
        return plan

    def tool_call(self, turn: int, name: str, args: dict | None = None, id: str | None = None) -> ToolCallSpec:
        """On `turn`, emit a toolCall and wait for its tool_response before replying."""
        spec = ToolCallSpec(name, dict(args or {}), id)
        self.turn(turn).tool_calls.append(spec)
        return spec

    def reply(self, turn: int, *, text: str | None = None, audio: bytes | None = None) -> TurnPlan:
        return self.on_turn(turn, reply_text=text, reply_audio=audio)

    # ---- faults -----------------------------------------------------------------
    def fault(self, turn: int | None = None, during: str = "reply", kind: str = "close", *,
              after_s: float | None = 0.0, time_left: str | float = "10s", code: int = 1011,
              reason: str = "", count: int = 1) -> Fault:
        """Inject a one-shot fault (faults.py): `kind` in go_away/close/drop/stall,
        `during` in reply/after_turn/setup/tool_call.

        reply: `after_s` seconds of reply audio into turn `turn`'s reply; after_turn:
        after its turnComplete; tool_call: `after_s` after the toolCall is sent or when
        the toolResponse arrives, whichever is first (`after_s=None`: on arrival);
        setup: the next `count` connections, before setupComplete. `turn=None`: the next
        such moment of any turn. go_away carries `time_left` ("3s" or seconds) and the
        server closes the connection at that deadline; close uses `code`/`reason`.
        """
        if not isinstance(time_left, str):
            time_left = f"{float(time_left):g}s"
        return self.faults.add(Fault(kind=kind, during=during, turn=turn, after_s=after_s, time_left=time_left,
                                     code=code, reason=reason, count=count))

    def stall_setups(self, count: int = 1) -> Fault:
        """The next `count` connections read setup and never answer it."""
        return self.fault(during="setup", kind="stall", count=count)

    def fail_setups(self, count: int = 1, kind: str = "close", code: int = 1011, reason: str = "") -> Fault:
        """The next `count` connections are closed (`code`) or dropped before setupComplete."""
        return self.fault(during="setup", kind=kind, code=code, reason=reason, count=count)

    def go_away_after_turn(self, n: int, time_left: str = "10s") -> Fault:
        return self.fault(turn=n, during="after_turn", kind="go_away", time_left=time_left)

    def close_after_turn(self, n: int, code: int = 1011, reason: str = "Internal error encountered.") -> Fault:
        return self.fault(turn=n, during="after_turn", kind="close", code=code, reason=reason)

    def stall_on_turn(self, n: int) -> Fault:
        """Stop answering when turn n arrives (the session stays open, silent)."""
        return self.fault(turn=n, during="reply", kind="stall", after_s=0.0)

    def refuse_connections(self, count: int = 1, status: int = 503, message: str = "The service is currently unavailable.") -> None:
        """Refuse the next `count` websocket upgrades with an HTTP error."""
        self._refusals.extend([(status, message)] * count)

    def take_refusal(self) -> tuple[int, str] | None:
        return self._refusals.pop(0) if self._refusals else None

    # ---- lookup -----------------------------------------------------------------
    def plan_for(self, n: int) -> TurnPlan:
        plan = self.turns.get(n) or TurnPlan()
        merged = TurnPlan(
            transcript=plan.transcript if plan.transcript is not None else self.transcripts.get(n),
            reply_text=plan.reply_text,
            reply_audio=plan.reply_audio if plan.reply_audio is not None else self.default_reply_audio,
            tool_calls=list(plan.tool_calls),
            go_away=plan.go_away,
            close=plan.close,
            stall=plan.stall,
        )
        # faults are one-shot
        if n in self.turns:
            self.turns[n].go_away = None
            self.turns[n].close = None
            self.turns[n].stall = False
        return merged
