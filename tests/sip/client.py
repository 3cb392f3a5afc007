"""The test side of tests/sip/phone.py: start the phone process, send it commands, wait
for its events (asyncio)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

PHONE = Path(__file__).with_name("phone.py")


class PhoneProcess:
    def __init__(self, port: int = 0, media_port: int = 40000) -> None:
        self.want_port = port
        self.media_port = media_port  # its RTP ports: media_port .. +999 (one range per phone)
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict] = []
        self.port = 0
        self._changed = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def start(self) -> "PhoneProcess":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PHONE), str(self.want_port), str(self.media_port), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        self._reader = asyncio.create_task(self._read())
        ready = await self.wait_event(lambda e: e["ev"] == "ready", timeout=20)
        self.port = ready["port"]
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while line := await self.proc.stdout.readline():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue  # pjlib's own start-up lines
            self._changed.set()

    def send(self, **cmd) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    def mark(self) -> int:
        return len(self.events)

    async def wait_event(self, pred, *, since: int = 0, timeout: float = 30.0) -> dict:
        async def poll() -> dict:
            while True:
                for e in self.events[since:]:
                    if pred(e):
                        return e
                self._changed.clear()
                if self.proc is not None and self.proc.returncode is not None:
                    raise AssertionError(f"the phone process exited ({self.proc.returncode})")
                await self._changed.wait()

        try:
            return await asyncio.wait_for(poll(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"phone: no such event within {timeout:.0f} s; events: {self.events[since:]}") \
                from None

    async def wait_state(self, state: str, *, since: int = 0, timeout: float = 30.0) -> dict:
        return await self.wait_event(lambda e: e["ev"] == "state" and e["state"] == state, since=since,
                                     timeout=timeout)

    async def idle(self, timeout: float = 20.0) -> None:
        """Hang up whatever is still up and wait until the phone has no call."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self.send(cmd="hangup")
            m = self.mark()
            self.send(cmd="status")
            ev = await self.wait_event(lambda e: e["ev"] == "status", since=m, timeout=10)
            if ev["active"] == 0 or asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.5)

    def digits(self, since: int = 0) -> str:
        return "".join(e["digit"] for e in self.events[since:] if e["ev"] == "dtmf")

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self.send(cmd="quit")
            await asyncio.wait_for(self.proc.wait(), 10)
        except (asyncio.TimeoutError, BrokenPipeError, ConnectionResetError):
            self.proc.kill()
            await self.proc.wait()
        if self._reader:
            self._reader.cancel()
