"""Let the suite's heaviest modules run with nothing beside them, across xdist's processes.

A reader-writer lock on files (flock): a heavy module holds it exclusively from its first
test's setup to its last test's teardown, every other test holds it shared for itself. A
turnstile file keeps a heavy module that waits from being overtaken by the other
process's next module. The wait happens outside pytest-timeout's clock (the caller is
an outer hook wrapper), so a module that waits for another is not timed out for it."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path


class RunAlone:
    def __init__(self, run_id: str) -> None:
        folder = Path(tempfile.gettempdir())
        self._paths = [folder / f"pytest-run-alone-{run_id}.{name}" for name in ("room", "turnstile")]
        self._room, self._turnstile = (os.open(p, os.O_RDWR | os.O_CREAT, 0o600) for p in self._paths)
        self.holding: str | None = None  # the module or test that holds the lock

    def enter(self, holder: str, alone: bool) -> None:
        """Hold the lock for `holder` (a module or a test): alone, or shared."""
        if self.holding == holder:
            return
        self.leave()
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)
        if alone:
            fcntl.flock(self._room, fcntl.LOCK_EX)  # others queue at the turnstile meanwhile
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
            fcntl.flock(self._room, fcntl.LOCK_SH)
        self.holding = holder

    def leave(self) -> None:
        if self.holding is not None:
            fcntl.flock(self._room, fcntl.LOCK_UN)
            self.holding = None

    def close(self) -> None:
        """At the end of this process's run (the other keeps its open files, if it still runs)."""
        self.leave()
        for fd in (self._room, self._turnstile):
            os.close(fd)
        for path in self._paths:
            path.unlink(missing_ok=True)
