"""Evaluation: metrics, fresh-head probing of frozen features, paired bootstrap, the comparison table and plots.

Modules:
    metrics    metric functions by task type (accuracy, macro-F1, MCC, Pearson, Spearman) and input checks
    heads      the fixed-budget fresh head trained on frozen features (OOD and KI tasks)
    features   feature extraction from a trained model (``model.encode(..., task_ids=None)``), cached
    bootstrap  the paired bootstrap over examples (CDCO against each baseline)
    pipeline   ``evaluate_step(cfg, method, seed)``: one method and seed on every task
    compare    ``run_comparison(cfg, methods, seeds, out_dir)``: the comparison table, CSV and plots
    plots      grouped bars by kind, per-task deltas against a baseline

Imports stay light here: torch and matplotlib are imported by the modules that need them.
"""
