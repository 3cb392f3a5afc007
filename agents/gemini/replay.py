"""What the model may not have yet: the client messages a new connection must send again.

A resumption handle stands for the conversation as the service had it when it issued the
handle. Whatever the client sent after that point (the caller's audio, a push-to-talk
marker, a request for a reply) is not in it, so after a reconnect it is sent again, in
order, before anything new. With transparent resumption (Vertex AI) the service says
exactly which message it consumed last; otherwise a handle covers what was sent before it
arrived.

Bounded by audio time: past `max_audio_s` the oldest audio is dropped and counted, so a
long outage costs memory in proportion to the bound, never to the call.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

# audio/pcm;rate=16000, 16-bit mono
_BYTES_PER_SECOND = 16000 * 2


@dataclass
class Entry:
    index: int  # the message's index on the connection it was sent on
    method: str  # the google-genai AsyncSession method that sent it
    kwargs: dict[str, Any]
    audio_s: float


def replayable(method: str, kwargs: dict[str, Any]) -> bool:
    """Messages whose loss would lose the caller's words or a pending reply. Chat history
    (turn_complete false) is re-synced by the plugin itself, tool responses are asked for
    again when the turn is replayed, and a stale video frame is worth nothing."""
    if method == "send_realtime_input":
        return "video" not in kwargs
    if method == "send_client_content":
        return kwargs.get("turn_complete", True) is not False
    return False


def audio_seconds(kwargs: dict[str, Any]) -> float:
    audio = kwargs.get("audio")
    data = getattr(audio, "data", None)
    return len(data) / _BYTES_PER_SECOND if data else 0.0


class ReplayLog:
    def __init__(self, max_audio_s: float) -> None:
        self.max_audio_s = max_audio_s
        self._entries: deque[Entry] = deque()
        self._audio_s = 0.0
        self.dropped_audio_s = 0.0  # audio that fell off the bound (reported, never silent)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def audio_s(self) -> float:
        return self._audio_s

    def record(self, index: int, method: str, kwargs: dict[str, Any]) -> None:
        if not replayable(method, kwargs):
            return
        entry = Entry(index, method, kwargs, audio_seconds(kwargs))
        self._entries.append(entry)
        self._audio_s += entry.audio_s
        while self._audio_s > self.max_audio_s and self._entries:
            old = self._entries.popleft()
            self._audio_s -= old.audio_s
            self.dropped_audio_s += old.audio_s

    def covered_through(self, index: int) -> None:
        """The service consumed every message up to and including `index`."""
        while self._entries and self._entries[0].index <= index:
            self._audio_s -= self._entries.popleft().audio_s

    def clear(self) -> None:
        self._entries.clear()
        self._audio_s = 0.0

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything to send again, oldest first, as (method, kwargs); the log starts afresh
        (the new connection logs them again as it sends them)."""
        messages = [(e.method, e.kwargs) for e in self._entries]
        self.clear()
        return messages
