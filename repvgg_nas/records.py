"""Typed records a trial stores in its attrs: one home for their fields and their JSON form.

A :class:`RungRecord` is one rung of a multi-fidelity candidate's climb
(the ``rungs`` attr, lowest rung first). The search writes them, the
lifecycle, the report and the tests read them; all go through this class,
never through string keys of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .attrs import RUNG_OUT_OF_TIME, RUNGS

__all__ = ["RungRecord", "rung_records", "stop_record", "stored"]


@dataclass(frozen=True)
class RungRecord:
    """A candidate's result at one rung and what was decided there.

    ``accuracy`` is the objective's (the INT8 net's under a quantized
    runtime), ``float_accuracy`` the float net's where they differ;
    ``train_seconds`` the candidate's training time up to this rung.
    ``promoted`` is None until the rung is decided (and for the top rung);
    ``dominated_by`` the trial whose result stopped it; ``out_of_time`` marks a
    rung whose next rung would end after the time budget (promoted: paused
    for the next run; not promoted: stopped for good).
    """

    rung: int
    epochs: int
    accuracy: float
    float_accuracy: float | None
    images_per_s: float
    train_seconds: float
    promoted: bool | None = None
    dominated_by: int | None = None
    out_of_time: bool = False

    def decided(self, promoted: bool, dominated_by: int | None, out_of_time: bool) -> RungRecord:
        return replace(self, promoted=promoted, dominated_by=dominated_by, out_of_time=out_of_time)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (``out_of_time`` only when set, as studies written before this class have it)."""
        out = asdict(self)
        if not self.out_of_time:
            del out[RUNG_OUT_OF_TIME]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RungRecord:
        fl, by = d.get("float_accuracy"), d.get("dominated_by")
        return cls(rung=int(d["rung"]), epochs=int(d["epochs"]), accuracy=float(d["accuracy"]),
                   float_accuracy=None if fl is None else float(fl), images_per_s=float(d["images_per_s"]),
                   train_seconds=float(d.get("train_seconds", 0.0)), promoted=d.get("promoted"),
                   dominated_by=None if by is None else int(by), out_of_time=bool(d.get(RUNG_OUT_OF_TIME, False)))


def rung_records(source: Any) -> list[RungRecord]:
    """The rung records of a trial, or of its user attrs (lowest rung first; empty for a single-fidelity
    trial)."""
    attrs: Mapping[str, Any] = source.user_attrs if hasattr(source, "user_attrs") else source
    return [RungRecord.from_dict(r) for r in (attrs.get(RUNGS) or [])]


def stop_record(records: Sequence[RungRecord]) -> RungRecord | None:
    """The record of the rung a candidate was stopped at (not promoted), or None."""
    return next((r for r in records if r.promoted is False), None)


def stored(records: Sequence[RungRecord]) -> list[dict[str, Any]]:
    """The ``rungs`` attr value of ``records``."""
    return [r.to_dict() for r in records]
