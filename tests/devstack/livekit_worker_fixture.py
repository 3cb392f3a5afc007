"""A tiny livekit-agents worker for tests/devstack/test_local_livekit.py.

Run as `python livekit_worker_fixture.py [AGENT_NAME]` with LIVEKIT_URL,
LIVEKIT_API_KEY and LIVEKIT_API_SECRET set. On each job it joins the room,
sets attributes saying who it is and sends a text stream on topic
"fixture.hello", which the test observes as a normal participant would.

With FIXTURE_JOB_LOG set, each job appends "<job id> <room> ended: <reason>" to
that file when it really shuts down (its shutdown callbacks ran), so a test can
tell a job that ended from one the server merely marked as ended.
"""

from __future__ import annotations

import asyncio
import os
import sys

from livekit.agents import AgentServer, JobContext, JobExecutorType

AGENT_NAME = sys.argv[1] if len(sys.argv) > 1 else ""
LABEL = AGENT_NAME or "automatic"
JOB_LOG = os.environ.get("FIXTURE_JOB_LOG")

# threads, not processes: a job starts in milliseconds, which keeps the test short
server = AgentServer(job_executor_type=JobExecutorType.THREAD, num_idle_processes=0, port=0)


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    job_id, room_name = ctx.job.id, ctx.job.room.name

    async def record_end(reason: str) -> None:
        if JOB_LOG:
            with open(JOB_LOG, "a") as f:
                f.write(f"{job_id} {room_name} ended: {reason}\n")

    ctx.add_shutdown_callback(record_end)
    await ctx.connect()
    await ctx.room.local_participant.set_attributes(
        {"fixture.agent": LABEL, "fixture.job_metadata": ctx.job.metadata}
    )
    await ctx.room.local_participant.send_text(f"hello from {LABEL}", topic="fixture.hello")


if __name__ == "__main__":
    asyncio.run(server.run(devmode=True))
