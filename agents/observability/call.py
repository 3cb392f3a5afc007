"""The one hook agents/session.py calls per conversation: metrics, log context and (when the
job is traced for the benchmarks) the latency trace's session events."""

from __future__ import annotations

from livekit import rtc
from livekit.agents import AgentSession, JobContext

from . import latency_trace, logs
from .metrics import CallObserver


def observe_call(ctx: JobContext, session: AgentSession, participant: rtc.RemoteParticipant) -> CallObserver:
    logs.add_call_fields(ctx, participant=participant.identity)
    observer = CallObserver(session, ctx.room, participant)
    latency_trace.watch_session(session)  # the benchmarks' trace, when this job has one

    async def ended() -> None:  # the session's close event normally came first
        observer.end("job_shutdown")

    ctx.add_shutdown_callback(ended)
    return observer
