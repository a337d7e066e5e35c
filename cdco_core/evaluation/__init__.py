"""Evaluation: metrics, fresh-head probing of frozen features, paired bootstrap, the comparison table and plots.

Modules:
    metrics    metric functions by task type (accuracy, macro-F1, MCC, Pearson, Spearman) and input checks
    heads      the fixed-budget fresh head trained on frozen features (OOD and KI tasks)
    features   feature extraction from a trained model (``model.encode(..., task_ids=None)``), cached
    bootstrap  the paired bootstrap over examples (CDCO against each baseline)
    scoring    ``evaluate_model``: one trained model on every task (the ``evaluate`` step calls it)
    compare    ``write_report``: the comparison table, CSV, bootstrap and plots (the ``report`` step calls it)
    plots      grouped bars by kind, per-task deltas against a baseline

Imports stay light here: torch and matplotlib are imported by the modules that need them.
"""
