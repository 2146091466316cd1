"""``python -m repvgg_nas.convert IN OUT``: train-form weights -> deploy checkpoint.

The CLI only (in ``__main__``): it chains :func:`repvgg_nas.weights.load_any`,
:func:`repvgg_nas.model.reparameterize` with :func:`repvgg_nas.model.check_fusion`,
:func:`repvgg_nas.checkpoint.save_checkpoint` and the exporters of
:mod:`repvgg_nas.export`, which are the library.
"""

from __future__ import annotations

__all__: list[str] = []
