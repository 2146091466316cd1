"""A reader/writer lock per physical device, shared by every process on the machine.

Workers of one study on one machine share its devices. Training holds the
device's lock shared and a throughput measurement holds it exclusive, so no
other local worker trains on the device while one measures: the figure is
the net's, not the net's plus a neighbour's load.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["DeviceLock", "device_key", "default_lock_dir", "LOCK_DIR_ENV"]

LOCK_DIR_ENV = "REPVGG_NAS_LOCK_DIR"  # where the lock files live (default: a folder in the temp dir)


def device_key(device: Any) -> str:
    """A name for the physical device, the same in every process of this machine.

    CUDA devices are named by UUID, so ``cuda:0`` of two workers pinned to
    different GPUs (``CUDA_VISIBLE_DEVICES``) gets two different locks. The
    CPU is one device for the whole machine.
    """
    import torch

    d = torch.device(device)
    key = d.type
    if d.type == "cuda":
        index = d.index if d.index is not None else torch.cuda.current_device()
        try:
            key = f"cuda-{torch.cuda.get_device_properties(index).uuid}"
        except Exception:
            visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
            key = f"cuda{visible[index] if index < len(visible) else index}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def default_lock_dir() -> Path:
    env = os.environ.get(LOCK_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "repvgg_nas-locks"


class DeviceLock:
    """Reader/writer lock per device across processes (``fcntl.flock`` on two files).

    Training takes it shared, measurement exclusive. A turnstile file gives a
    waiting measurement priority: new trainings queue behind it instead of
    starving it. Locks die with their process, so a killed worker never
    leaves one behind. If the lock files cannot be created (read-only or
    lock-less filesystem) the lock degrades to a no-op and ``available`` is
    False, which the search records as ``measure_exclusive = False``.
    """

    def __init__(self, device: Any, lock_dir: str | os.PathLike | None = None) -> None:
        self.key = device_key(device)
        self.dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        self.path = self.dir / f"{self.key}.lock"
        self.gate = self.dir / f"{self.key}.gate"
        self.available = True
        self._shared_fds: list[int | None] = []

    def _open(self, path: Path) -> int | None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(self.dir, 0o1777)  # other users' workers share the device too
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            self.available = False
            return None
        return fd

    def _flock(self, fd: int | None, op: int) -> None:
        if fd is None:
            return
        try:
            fcntl.flock(fd, op)
        except OSError:
            self.available = False

    def _pass_gate(self) -> None:
        """Pass the turnstile: wait while a measurement is queued or running."""
        gate = self._open(self.gate)
        try:
            self._flock(gate, fcntl.LOCK_EX)
        finally:
            if gate is not None:
                self._flock(gate, fcntl.LOCK_UN)
                os.close(gate)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        if not self._shared_fds:  # a nested hold must not queue behind a measurement its outer hold blocks
            self._pass_gate()
        fd = self._open(self.path)
        self._flock(fd, fcntl.LOCK_SH)
        self._shared_fds.append(fd)
        try:
            yield
        finally:
            self._shared_fds.pop()
            if fd is not None:
                self._flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def yield_turn(self) -> None:
        """Inside :meth:`shared`: let a measurement queued by another process run now, then go on.

        A long training (a candidate climbing several rungs) calls this at its
        pauses, so another worker's measurement waits for one piece of training,
        not the whole trial. Without a queued measurement it returns at once.
        Outside :meth:`shared` it does nothing.
        """
        held = [fd for fd in self._shared_fds if fd is not None]
        if not held:
            return
        for fd in held:  # every hold of this lock: one left behind would block the measurement while it blocks us
            self._flock(fd, fcntl.LOCK_UN)
        self._pass_gate()
        for fd in held:
            self._flock(fd, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Yields whether the device really was held exclusively."""
        if self._shared_fds:
            raise RuntimeError("DeviceLock.exclusive() inside shared() of the same lock would deadlock")
        gate = self._open(self.gate)
        self._flock(gate, fcntl.LOCK_EX)  # hold the turnstile while waiting for trainings to end
        try:
            fd = self._open(self.path)
            self._flock(fd, fcntl.LOCK_EX)
        finally:
            if gate is not None:
                self._flock(gate, fcntl.LOCK_UN)
                os.close(gate)
        try:
            yield self.available
        finally:
            if fd is not None:
                self._flock(fd, fcntl.LOCK_UN)
                os.close(fd)
