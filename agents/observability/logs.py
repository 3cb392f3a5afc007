"""Room, job and participant on every log line of a call, through the framework's own log
context (`JobContext.log_context_fields`, applied by a filter on the root handlers of the
job's process, or of its thread under the thread executor)."""

from __future__ import annotations

from livekit.agents import JobContext


def add_call_fields(ctx: JobContext, **fields: str) -> None:
    ctx.log_context_fields = {**ctx.log_context_fields, **fields}


def add_job_fields(ctx: JobContext) -> None:
    add_call_fields(ctx, room=ctx.job.room.name, job_id=ctx.job.id)
