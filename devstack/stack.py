"""The whole product on one machine: LiveKit (local stand-in or real), Gemini (offline
stand-in or real) and agent worker processes running the unmodified `agent.py start`.

Used by `python agent.py local`, the end-to-end tests and the benchmarks. The worker only
ever sees the environment a real deployment gives it (LIVEKIT_*, GOOGLE_*, AGENT_*).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .gemini import OfflineGeminiServer
from .livekit import LocalLiveKitServer, load_config

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("devstack")


@dataclass
class WorkerProcess:
    """One `python agent.py start` process (the framework's worker with its job processes)."""

    proc: asyncio.subprocess.Process
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (the framework drains its jobs), then kill the whole process group."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        # job processes live in the worker's process group: none may outlive it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.returncode is None:
            await self.proc.wait()
        return self.proc.returncode


class LocalStack:
    """Start what is not configured for real; hand out the environment that reaches it."""

    def __init__(
        self,
        *,
        workdir: Path,
        livekit_config: Path = ROOT / "livekit.yaml",
        livekit_port: int | None = 0,
        base_env: dict[str, str] | None = None,
        sip_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.livekit_config = livekit_config
        self.livekit_port = livekit_port
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.livekit: LocalLiveKitServer | None = None
        self.gemini: OfflineGeminiServer | None = None
        self.workers: list[WorkerProcess] = []
        self.sip_port = sip_port  # None: no SIP gateway; 0: any free port
        self.sip = None  # devstack.sip.SipGateway once started

    @property
    def real_livekit(self) -> bool:
        return bool(self.base_env.get("LIVEKIT_URL"))

    @property
    def real_gemini(self) -> bool:
        return bool(self.base_env.get("GOOGLE_API_KEY")) or self.base_env.get(
            "GOOGLE_GENAI_USE_VERTEXAI", ""
        ).lower() in ("1", "true")

    async def start(self) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.real_livekit:
            overrides = {} if self.livekit_port is None else {"port": self.livekit_port}
            self.livekit = await LocalLiveKitServer(
                load_config(self.livekit_config, **overrides)
            ).start()
        if self.sip_port is not None and self.livekit is not None:
            from .sip import start_gateway

            self.sip = await start_gateway(self.livekit, port=self.sip_port)
        if not self.real_gemini:
            self.gemini = await OfflineGeminiServer(cert_dir=self.workdir / "gemini-cert").start()
        return self

    async def stop(self) -> None:
        for w in self.workers:
            await w.stop()
        self.workers.clear()
        if self.sip is not None:
            await self.sip.stop()
        if self.livekit is not None:
            await self.livekit.stop()
        if self.gemini is not None:
            await self.gemini.stop()

    async def __aenter__(self) -> LocalStack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def env(self) -> dict[str, str]:
        """What a worker, a client or the token endpoint needs to reach this stack."""
        env = dict(self.base_env)
        if self.livekit is not None:
            env.update(
                LIVEKIT_URL=self.livekit.url,
                LIVEKIT_API_KEY=self.livekit.api_key,
                LIVEKIT_API_SECRET=self.livekit.api_secret,
            )
        if self.gemini is not None:
            env.update(self.gemini.client_env())
        return env

    async def start_worker(
        self, agent_env: dict[str, str] | None = None, *, wait: bool = True, timeout: float = 60.0
    ) -> WorkerProcess:
        """Run `python agent.py start` against this stack; wait until LiveKit knows it."""
        # Several workers may share this host: each picks free health-check and metrics ports. The
        # host's CPU load here includes the servers and callers themselves, so a worker
        # only reports itself full at 100 %.
        env = {"AGENT_WORKER__HTTP_PORT": "0", "AGENT_OBSERVABILITY__METRICS_PORT": "0",
               "AGENT_WORKER__LOAD_THRESHOLD": "1.0", **self.env(), **(agent_env or {})}
        env.setdefault("PYTHONUNBUFFERED", "1")
        log_path = self.workdir / f"worker-{len(self.workers) + 1}.log"
        out = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "agent.py"), "start", "--log-level", env.get("AGENT_LOG_LEVEL", "INFO"),
            cwd=str(ROOT), env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        worker = WorkerProcess(proc, log_path, env)
        self.workers.append(worker)
        if wait:
            await self.wait_registered(worker, env.get("AGENT_AGENT__NAME", "gemini-agent"), timeout)
        return worker

    async def wait_registered(self, worker: WorkerProcess, agent_name: str, timeout: float) -> None:
        async def registered() -> None:
            while True:
                if worker.proc.returncode is not None:
                    raise RuntimeError(
                        f"agent worker exited with {worker.proc.returncode}:\n{worker.log_tail()}"
                    )
                if self.livekit is not None:
                    workers = self.livekit.workers.workers.values()
                    if any(w.agent_name == agent_name and not w.closed for w in workers):
                        return
                elif "registered worker" in worker.log_tail(200):
                    return
                await asyncio.sleep(0.1)

        try:
            await asyncio.wait_for(registered(), timeout)
        except asyncio.TimeoutError:
            raise RuntimeError(
                f"agent worker did not register within {timeout:.0f} s:\n{worker.log_tail()}"
            ) from None
