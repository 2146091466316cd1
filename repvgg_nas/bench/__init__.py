"""The bench CLI (``python -m repvgg_nas.bench``); the library is :mod:`repvgg_nas.measure`."""
