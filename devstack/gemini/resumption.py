"""Session resumption handles: what each one restores, and when it stops being valid.

A handle is issued (sessionResumptionUpdate, `resumable: true`) only when the session
is idle: after a turn's turnComplete with nothing queued, and, for `transparent`
sessions, every `OfflineGeminiServer.resumption_update_interval_s` while the caller
talks or is silent. While the model generates or waits for a tool response the update
says `resumable: false` and carries no handle (google-genai's documented behaviour).

The state a handle restores is the conversation (id, turn count, history, system
instruction) plus the activity detector's state (audio of a turn in progress), so that a
client that replays the messages after `lastConsumedClientMessageIndex` feeds the new
connection exactly the audio the old one had not yet taken in.

Validity (Google documents handles as valid for 2 hours after the session's last
connection ended; the exact rule is not documented): a handle stays valid while its
connection is open and for `handle_ttl_s` after it ended. An unknown or expired handle
is refused before setupComplete with close code 1007 (observed in the field for a
rejected resumption; the reason text is ours). To bound memory in long soaks, a
connection keeps its last `KEEP_PER_SESSION` handles; older ones count as unknown.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .protocol import CLOSE_INVALID, ProtocolError

if TYPE_CHECKING:
    from .session import Conversation, LiveSession

KEEP_PER_SESSION = 200
UNKNOWN_HANDLE = "Invalid session resumption handle."
EXPIRED_HANDLE = "Session resumption handle has expired."


@dataclass
class ResumptionState:
    conversation: "Conversation"
    vad: dict | None  # EnergyVad.snapshot()
    manual_capture: list | None  # audio since activityStart, manual turn detection
    issued_at: float
    session: "LiveSession"  # the connection that issued it
    last_consumed_index: int


class HandleStore:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._states: dict[str, ResumptionState] = {}
        self._by_session: dict[int, list[str]] = {}
        self.refused: list[tuple[str, str]] = []  # (handle, reason)

    def issue(self, state: ResumptionState) -> str:
        handle = f"offline-resume-{uuid.uuid4().hex}"
        self._states[handle] = state
        self._by_session.setdefault(id(state.session), []).append(handle)
        older = self._by_session[id(state.session)]
        while len(older) > KEEP_PER_SESSION:
            self._states.pop(older.pop(0), None)
        return handle

    def expires_at(self, handle: str) -> float | None:
        state = self._states.get(handle)
        if state is None:
            return None
        ended = state.session.ended_at
        return float("inf") if ended is None else ended + self.ttl_s

    def get(self, handle: str) -> ResumptionState | None:
        return self._states.get(handle)

    def resume(self, handle: str) -> ResumptionState:
        """The state behind `handle` (a copy), or ProtocolError 1007."""
        state = self._states.get(handle)
        if state is None:
            self.refused.append((handle, UNKNOWN_HANDLE))
            raise ProtocolError(CLOSE_INVALID, UNKNOWN_HANDLE)
        if time.monotonic() >= (self.expires_at(handle) or 0):
            self.refused.append((handle, EXPIRED_HANDLE))
            raise ProtocolError(CLOSE_INVALID, EXPIRED_HANDLE)
        return ResumptionState(
            conversation=state.conversation.copy(), vad=state.vad,
            manual_capture=[a.copy() for a in state.manual_capture] if state.manual_capture is not None else None,
            issued_at=state.issued_at, session=state.session, last_consumed_index=state.last_consumed_index,
        )


