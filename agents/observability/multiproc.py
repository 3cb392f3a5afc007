"""Prometheus multiprocess mode, so the worker's /metrics shows every job process.

With the process executor each call runs in its own process; prometheus-client then keeps
each process's values in files under PROMETHEUS_MULTIPROC_DIR and the framework's metrics
endpoint (`AgentServer(prometheus_port=...)`) sums them on every scrape. prometheus-client
chooses file-backed values when it is first imported, so the directory must be in the
environment before anything imports it (agent.py calls `prepare` first thing).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import shutil
import sys
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
logger = logging.getLogger("gemini-agent.metrics")


def prepare() -> str:
    """Use $PROMETHEUS_MULTIPROC_DIR, or a private temporary one removed at exit."""
    if "prometheus_client" in sys.modules and ENV not in os.environ:
        raise RuntimeError("prometheus_client imported before the multiprocess directory was set")
    path = os.environ.get(ENV)
    if not path:
        path = tempfile.mkdtemp(prefix="gemini-agent-metrics-")
        os.environ[ENV] = path
        owner = os.getpid()
        # only the process that made it removes it (job processes inherit atexit handlers)
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(path, ignore_errors=True))
    return path


_PID_FILE = re.compile(r"_(\d+)\.db$")


def reap_dead_processes(path: str | None = None) -> list[int]:
    """Drop the live gauges (e.g. active calls) of job processes that are gone, as
    prometheus-client asks (`mark_process_dead`); counters and histograms stay summed."""
    from prometheus_client import multiprocess

    path = path or os.environ.get(ENV)
    if not path or not os.path.isdir(path):
        return []
    dead = set()
    for name in os.listdir(path):
        m = _PID_FILE.search(name)
        if m and name.startswith("gauge_live"):
            pid = int(m.group(1))
            if not _alive(pid):
                dead.add(pid)
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet waited for) is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


async def reap_forever(interval: float = 2.0) -> None:
    """Run in the worker: job processes that crashed or were killed leave no active call."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.get_running_loop().run_in_executor(None, reap_dead_processes)
        except Exception:  # never let bookkeeping take the worker down
            logger.debug("reaping dead job processes' metrics failed", exc_info=True)
