"""Who runs a trial, and ``--workers N``: local worker processes on one study.

- **Identity.** A trial records its worker as ``host:pid`` plus the process
  start time (:class:`WorkerId`), so crash recovery can tell a dead local
  worker from a live one even after the pid was reused.
- **Launching.** :func:`launch_workers` runs N copies of the search as
  subprocesses, pins each to one GPU when there are several
  (:func:`worker_env`), prefixes their output, and stops them all on Ctrl-C.
  :func:`worker_argv` makes a child's command line from the parent's own, so
  a new flag of the CLI reaches the workers without being listed twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "WorkerId",
    "current_worker",
    "worker_seed",
    "pid_alive",
    "visible_gpus",
    "worker_env",
    "worker_argv",
    "launch_workers",
]

WORKERS_FLAG = "--workers"
WORKER_INDEX_FLAG = "--worker-index"


@dataclass(frozen=True)
class WorkerId:
    """Who runs a trial: host, pid and the process start time (guards against pid reuse)."""

    host: str
    pid: int
    start: int | None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], start time is [19])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def current_worker() -> WorkerId:
    return WorkerId(socket.gethostname(), os.getpid(), _start_ticks(os.getpid()))


def run_seed(seed: int, held: int) -> int:
    """The sampler seed of a run that finds ``held`` trials in its study.

    The first run (an empty study) uses the study seed, so it is
    reproducible trial by trial; each later run gets a seed of its own,
    derived from the study seed and what the study holds, so running the same
    command again draws new nets instead of replaying the previous run's draws.
    """
    return seed if held == 0 else zlib.crc32(f"{seed}:run:{held}".encode()) % (2**31 - 1)


def worker_seed(seed: int, worker: WorkerId | None = None) -> int:
    """A sampler seed of its own for each worker of a shared study.

    Workers seeded alike propose the same architectures at the same time
    (a seeded NSGA-II draws the same first generation everywhere) and train
    each several times. The study's seed still matters (same seed, same
    host and pid give the same stream); training always uses the study seed.
    """
    w = worker or current_worker()
    return zlib.crc32(f"{seed}:{w.host}:{w.pid}:{w.start}".encode()) % (2**31 - 1)


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie or a reused pid does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _proc_stat(pid)
    if fields is None:
        return not Path("/proc/self/stat").exists()  # no procfs: trust os.kill
    if fields[0] == "Z":
        return False
    return start is None or len(fields) <= 19 or int(fields[19]) == int(start)


def visible_gpus() -> list[str]:
    """CUDA device ids this process may hand out (honours an existing CUDA_VISIBLE_DEVICES)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [v.strip() for v in env.split(",") if v.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:
        return []


def worker_env(index: int, gpus: Sequence[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of worker ``index``: one GPU of ``gpus`` round-robin when there are several."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the parent as they are printed
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def worker_argv(argv: Sequence[str], index: int) -> list[str]:
    """The parent's arguments for worker ``index``: without ``--workers N``, with ``--worker-index i``.

    Both spellings are removed (``--workers N`` and ``--workers=N``); every
    other argument is passed on exactly as the user wrote it.
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == WORKERS_FLAG:
            skip = True  # its value follows
        elif not arg.startswith(f"{WORKERS_FLAG}="):
            out.append(arg)
    return [*out, WORKER_INDEX_FLAG, str(index)]


def _pump(stream: IO[str], prefix: str, out: IO[str], lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
            out.flush()
    stream.close()


def launch_workers(
    commands: Sequence[Sequence[str]],
    envs: Sequence[Mapping[str, str]],
    *,
    out: IO[str] | None = None,
    poll_s: float = 0.2,
    stop_grace_s: float = 60.0,
) -> list[int]:
    """Run one subprocess per command, stream their output prefixed ``[worker i]``, return exit codes.

    Children run in their own session so a terminal Ctrl-C reaches only this
    process, which then forwards exactly one SIGINT to each (a worker finishes
    recording its trial as interrupted and exits); stragglers are killed after
    ``stop_grace_s``. The parent polls its children so a dead one is reaped at
    once: a zombie would still look alive to the other workers' recovery.
    """
    out = out if out is not None else sys.stderr
    lock = threading.Lock()
    procs: list[subprocess.Popen[str]] = []
    pumps = []
    try:
        for i, (cmd, env) in enumerate(zip(commands, envs)):
            p = subprocess.Popen(
                list(cmd), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, bufsize=1, start_new_session=True,
            )
            procs.append(p)
            th = threading.Thread(target=_pump, args=(p.stdout, f"[worker {i}] ", out, lock), daemon=True)
            th.start()
            pumps.append(th)
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + stop_grace_s
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise
    finally:
        for th in pumps:
            th.join(timeout=5)
    return [int(p.returncode) for p in procs]
