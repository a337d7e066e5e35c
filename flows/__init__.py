"""Prefect flows: ``cdco`` (the pipeline, deployment ``full-pipeline``) and ``cdco-dataset-sensor``.

Flows only order tasks and pass results on; the work is in ``tasks/`` (wrappers) and ``cdco_core`` (logic).
See docs/orchestration.md.
"""
