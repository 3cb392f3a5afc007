"""The one hook agents/session.py calls per conversation: metrics and log context for it."""

from __future__ import annotations

from livekit import rtc
from livekit.agents import AgentSession, JobContext

from . import logs
from .metrics import CallObserver


def observe_call(ctx: JobContext, session: AgentSession, participant: rtc.RemoteParticipant) -> CallObserver:
    logs.add_call_fields(ctx, participant=participant.identity)
    observer = CallObserver(session, ctx.room, participant)

    async def ended() -> None:  # the session's close event normally came first
        observer.end("job_shutdown")

    ctx.add_shutdown_callback(ended)
    return observer
