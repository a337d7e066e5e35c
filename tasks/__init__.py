"""Prefect tasks: one module per pipeline step, each a thin wrapper over one ``cdco_core`` function.

A task takes the config as a dict plus the small digests it depends on (``upstream``), returns JSON-able
paths and digests with ``_files`` ({path: sha256}) for cache verification, and is cached by content
(:mod:`tasks._cache`). Each module also has a ``log_*`` function that writes the step's nested MLflow run;
the flow calls it in its own thread after the task returns, cached or not, so every pipeline run's
lineage is complete and tasks running on Dask workers need no MLflow state.
"""
