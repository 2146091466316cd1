"""Device names: which torch device ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` means here.

Below both :mod:`repvgg_nas.train` and :mod:`repvgg_nas.measure`, so training
and measuring resolve a name the same way without one importing the other. A
CUDA device that is missing, or an unknown name, is a one-line ConfigError
here rather than a torch error later.
"""

from __future__ import annotations

import re

import torch

from .errors import ConfigError

__all__ = ["DEVICE_NAMES", "check_device_name", "resolve_device"]

DEVICE_NAMES = "auto, cpu, cuda, cuda:N"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(device: object) -> str | None:
    """``device`` lower-cased and stripped when it is a valid name, else None."""
    if not isinstance(device, str):
        return None
    name = device.strip().lower()
    return name if _DEVICE_RE.match(name) else None


def resolve_device(device: torch.device | str | None = "auto", key: str = "device") -> torch.device:
    """The concrete device: ``None``/``auto`` -> CUDA when available, else CPU.

    ``key`` names the setting in messages (``measure.device``). A
    ``torch.device`` is taken by its name.
    """
    given = "auto" if device is None else str(device)
    name = check_device_name(given)
    if name is None:
        raise ConfigError(f"{key}: {given!r} is not allowed; choose from {DEVICE_NAMES}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not name.startswith("cuda"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{key}: {given!r}, but CUDA is not available on this "
            f"machine (torch {torch.__version__}); use 'cpu' or 'auto'"
        )
    index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{key}: {given!r} is out of range; only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)
