"""Proactive audio, emulated deterministically, and what a meeting tells the model.

With `proactivity.proactiveAudio` in the setup, Gemini's native-audio models may decline
to answer a turn (for example talk not meant for them). The service decides with the
model itself; this stand-in decides by a rule tests can rely on: a user turn is answered
only if its transcript (the scripted one, `script.transcripts`, or the default
"utterance N") or its text contains one of the agent's names as a whole word. The names
are `script.agent_names`, else those the instructions give: "You are Nova" /
"Your name is Nova", and "(also called A, B)". Requests the client makes explicitly
(generate_reply's instructions) are always answered.

A declined turn sends what the service is expected to send (not verified against the
service, see README.md): the turn's inputTranscription, then turnComplete, with no
modelTurn, no audio and no outputTranscription.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import protocol as p

if TYPE_CHECKING:
    from .session import LiveSession, _Turn

_NAME_RE = re.compile(r"\b(?:You are|Your name is)\s+([A-Z][\w-]*)")
_ALIASES_RE = re.compile(r"\(also called ([^)]*)\)")


def enabled(session: "LiveSession") -> bool:
    pro = (session.setup or {}).get("proactivity") or {}
    return bool(pro.get("proactive_audio"))


def agent_names(session: "LiveSession") -> set[str]:
    explicit = getattr(session.server.script, "agent_names", None)
    if explicit:
        return set(explicit)
    # the latest instructions: the setup's, or an update sent as a model turn mid-session
    texts = [session.conversation.system_instruction] + [
        h.get("text") or "" for h in session.conversation.history if h.get("role") in ("model", "system")
        and h.get("source") == "client_content"
    ]
    names: set[str] = set()
    for text in texts:
        found = _NAME_RE.findall(text)
        if found:
            names = set(found)
            for group in _ALIASES_RE.findall(text):
                names.update(a.strip() for a in group.split(",") if a.strip())
    return names


def addressed(text: str, names: set[str]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text, re.IGNORECASE) for n in names)


def declines(session: "LiveSession", turn: "_Turn", user_text: str) -> bool:
    """Would proactive audio leave this turn unanswered?"""
    if not enabled(session) or turn.instructions:
        return False
    return not addressed(user_text, agent_names(session))


async def decline(session: "LiveSession", user_text: str) -> None:
    session.declined.append(user_text)
    await session._send(p.server_content(turn_complete=True))


def client_notes(session: "LiveSession") -> list[str]:
    """User-role text the client added to the context without asking for a reply
    (client_content with turnComplete false): the meeting's speaker, join and leave notes,
    typed chat kept for the record."""
    out = []
    for m in session.received:
        if m.kind != "client_content" or m.body.get("turn_complete"):
            continue
        for t in m.body.get("turns") or []:
            if (t or {}).get("role", "user") == "user":
                out.append(p.content_text(t))
    return out
