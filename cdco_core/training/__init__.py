"""The shared multi-task trainer: batches, staged training, checkpoints, the cached stage pipeline.

The ``train`` step (:mod:`cdco_core.steps.train`) runs one stage with these parts;
``python -m cdco_core.training --profile smoke --method cdco`` runs all stages of one method.
Nothing heavy is imported here.
"""
