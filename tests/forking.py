"""Forking a quiet ``mmcit`` CLI child from the warm test process (a fresh interpreter costs ~9 s
of imports on 2 cores); a SIGKILL of the child is as abrupt as of any process."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

from mmcit.cli import main


def fork_cli(argv: list[str], setup: Callable[[], None] | None = None) -> int:
    """Start ``mmcit <argv>`` in a forked child with its output silenced; returns the child's pid.

    ``setup`` runs in the child only, before the CLI (e.g. to patch a hook to sleep).
    """
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if setup is not None:
                setup()
            code = main(argv)
        except BaseException:  # noqa: BLE001 - report through the exit code only
            code = 99
        finally:
            os._exit(code)
    return pid


def kill_once_written(pid: int, path: Path, timeout: float = 120.0) -> None:
    """SIGKILL the forked child ``pid`` as soon as ``path`` exists (it must not end before), and
    check that it died of that signal with ``path`` written."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        assert not done, f"the run ended (exit {os.waitstatus_to_exitcode(status)}) before it could be killed"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL and path.exists()
