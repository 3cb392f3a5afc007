"""What the offline server records for assertions: turns answered, per conversation.

A conversation outlives its connections: a session that resumes from a handle serves
the same conversation (same `id`, turn numbering continued), so the turns a test cares
about (was every question answered in full?) are listed per conversation in
`OfflineGeminiServer.conversations`, whichever connection answered them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .audio import INPUT_RATE


@dataclass
class TurnRecord:
    conversation: str
    session: int  # LiveSession.index that answered (or started answering) it
    n: int  # turn number in the conversation
    source: str  # "audio" | "text" | "content"
    transcript: str  # the user's words (inputTranscription, text, or the content's text)
    audio: bytes = b""  # the user's audio for this turn, 16 kHz PCM
    started_at: float = 0.0  # time.monotonic()
    ended_at: float | None = None
    reply_text: str = ""
    reply_audio_s: float = 0.0  # reply audio actually sent
    # "completed" (turnComplete sent), "interrupted" (barge-in), "cut" (the connection
    # ended or stalled mid-reply), or "pending" while it is being answered
    outcome: str = "pending"
    fault: str | None = None  # the fault kind that cut it ("close", "drop", "stall", "go_away")

    @property
    def audio_s(self) -> float:
        return len(self.audio) / 2 / INPUT_RATE

    @property
    def completed(self) -> bool:
        return self.outcome == "completed"


@dataclass
class ConversationLog:
    id: str
    sessions: list[int] = field(default_factory=list)  # LiveSession.index, in order served
    turns: list[TurnRecord] = field(default_factory=list)

    @property
    def answered(self) -> list[TurnRecord]:
        """Turns whose reply was sent to its end (turnComplete)."""
        return [t for t in self.turns if t.completed]

    @property
    def cut(self) -> list[TurnRecord]:
        return [t for t in self.turns if t.outcome == "cut"]

    @property
    def answered_audio(self) -> bytes:
        """The caller's audio of every turn answered in full, in order (16 kHz PCM)."""
        return b"".join(t.audio for t in self.answered)

    def summary(self) -> dict:
        """JSON-able: per turn its number, session, source, transcript, seconds, outcome, fault."""
        return {"id": self.id, "sessions": self.sessions, "turns": [
            {"n": t.n, "session": t.session, "source": t.source, "transcript": t.transcript,
             "audio_s": round(t.audio_s, 3), "reply_audio_s": round(t.reply_audio_s, 3),
             "outcome": t.outcome, "fault": t.fault} for t in self.turns]}
