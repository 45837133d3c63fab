"""Where a training session ran, and whether its process is still alive.

Every start and every resume of a run appends one session to the run's
``environment.json``: time, first step, device, versions, threads, and the host and
process (pid and, on Linux, the process start time, so a recycled pid is not mistaken for
the run). A run whose status is "running" but whose process is gone was killed:
``sgdlab resume`` continues it, and refuses a run whose process is still alive.
"""

from __future__ import annotations

import os
import platform
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sgdlab.store import Run, StoreError

if TYPE_CHECKING:
    import torch


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22 of stat(5)
    except (OSError, ValueError, IndexError):
        return None


def environment(device: torch.device, step: int) -> dict:
    """One training session: where and when it started, and from which step."""
    import torch

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    return {"started": datetime.now(UTC).isoformat(timespec="seconds"), "from_step": step,
            "device": str(device), "device_name": name, "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "host": socket.gethostname(), "pid": os.getpid(),
            "pid_start": process_start(os.getpid())}


def session_alive(session: dict) -> bool | None:
    """Whether the session's process still runs: None when it ran on another host (or
    the record has no process), else True or False."""
    pid = session.get("pid")
    if session.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user: the start time decides
        pass
    recorded, now = session.get("pid_start"), process_start(pid)
    return recorded is None or now is None or recorded == now


def sessions_of(run: Run) -> list[dict]:
    """The run's training sessions from ``environment.json`` (none for runs before it)."""
    try:
        return list(run.read_json("environment")["sessions"])
    except (StoreError, KeyError, TypeError):
        return []


def last_session(run: Run) -> dict | None:
    return (sessions_of(run) or [None])[-1]
