"""The agent worker: an AgentServer that LiveKit dispatches jobs to, one room per job.

Scaling out is LiveKit's job: run this worker on more machines against the same LiveKit
deployment (a Redis-backed livekit-server cluster or LiveKit Cloud); each worker reports
its load and LiveKit's dispatcher spreads rooms across them.
"""

from __future__ import annotations

import asyncio
import os

from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess

from .observability import logs, multiproc, tracing
from .session import run_session
from .settings import Settings, load_settings


def _prewarm(proc: JobProcess) -> None:
    # Job processes are started ahead of time; settings, the instructions text, Gemini's
    # TLS context and google-genai's first-use costs are ready before any call, done once
    # in the forkserver (agents/preload.py) and inherited.
    from . import preload

    proc.userdata["settings"] = preload.SETTINGS or load_settings()
    proc.userdata.update(preload.WARM)


async def gemini_agent(ctx: JobContext) -> None:
    settings = ctx.proc.userdata.get("settings") or load_settings()
    logs.add_job_fields(ctx)
    tracing.trace_job(ctx, settings)
    await run_session(ctx, settings)


class ProductServer(AgentServer):
    """The framework's AgentServer, keeping why it stopped: the framework's CLI logs a failed
    worker (LiveKit unreachable after its retries, a port taken) and exits 0; agent.py turns
    `failure` into one line and a non-zero exit status."""

    failure: BaseException | None = None

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        try:
            await super().run(devmode=devmode, unregistered=unregistered)
        except Exception as e:
            self.failure = e


def _calls_load(max_calls: int):
    """Load as the share of this worker's calls (worker.max_calls), instead of host CPU."""

    def load(server: AgentServer) -> float:
        return min(1.0, len(server.active_jobs) / max_calls)

    return load


def _reap_metrics_of_dead_jobs() -> None:
    if os.environ.get(multiproc.ENV):
        task = asyncio.get_running_loop().create_task(multiproc.reap_forever(), name="metrics_reaper")
        _background.add(task)


_background: set[asyncio.Task] = set()


def create_server(settings: Settings) -> ProductServer:
    # No local VAD or turn detector runs here (Gemini detects turns): keep the framework
    # from loading their weights (~250 MB) into the forkserver, or into the worker itself
    # with the thread executor. Its own variable, so a deployment can still say otherwise.
    os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    w = settings.worker
    server = ProductServer(
        setup_fnc=_prewarm,
        port=w.http_port,
        num_idle_processes=w.num_idle_processes,
        load_threshold=w.load_threshold,
        load_fnc=_calls_load(w.max_calls) if w.max_calls else None,
        max_retry=w.connect_retries,
        job_executor_type=JobExecutorType(w.job_executor),
        job_memory_warn_mb=w.job_memory_warn_mb,
        job_memory_limit_mb=w.job_memory_limit_mb,
        preload_modules=["agents.preload"],
        # the framework's /metrics, with the product's (agents/observability/metrics.py)
        prometheus_port=settings.observability.metrics_port,
    )
    server.on("worker_started", _reap_metrics_of_dead_jobs)
    server.rtc_session(gemini_agent, agent_name=settings.agent.name)
    return server
