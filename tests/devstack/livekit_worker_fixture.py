"""A tiny livekit-agents worker for tests/devstack/test_local_livekit.py.

Run as `python livekit_worker_fixture.py [AGENT_NAME]` with LIVEKIT_URL,
LIVEKIT_API_KEY and LIVEKIT_API_SECRET set. On each job it joins the room,
sets attributes saying who it is and sends a text stream on topic
"fixture.hello", which the test observes as a normal participant would.
"""

from __future__ import annotations

import asyncio
import sys

from livekit.agents import AgentServer, JobContext, JobExecutorType

AGENT_NAME = sys.argv[1] if len(sys.argv) > 1 else ""
LABEL = AGENT_NAME or "automatic"

# threads, not processes: a job starts in milliseconds, which keeps the test short
server = AgentServer(job_executor_type=JobExecutorType.THREAD, num_idle_processes=0, port=0)


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    await ctx.room.local_participant.set_attributes(
        {"fixture.agent": LABEL, "fixture.job_metadata": ctx.job.metadata}
    )
    await ctx.room.local_participant.send_text(f"hello from {LABEL}", topic="fixture.hello")


if __name__ == "__main__":
    asyncio.run(server.run(devmode=True))
