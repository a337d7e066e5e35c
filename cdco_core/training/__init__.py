"""The shared multi-task trainer: batches, staged training, checkpoints, the cached stage pipeline.

Entry points live in :mod:`cdco_core.training.pipeline` (``train_stage``, ``train_all_stages``,
``load_trained``); ``python -m cdco_core.training --profile smoke --method cdco`` runs all stages.
Nothing heavy is imported here.
"""
