"""``train.dev_select``: dev checks every N steps, the best weights kept, early stopping, and exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from cdco_core.config import StageConfig
from cdco_core.errors import ConfigError
from cdco_core.methods.base import Method
from cdco_core.models.multitask import build_multitask_model
from cdco_core.profile import load_profile, with_overrides
from cdco_core.samplers import get_sampler
from cdco_core.training.batches import BatchSource, task_examples
from cdco_core.training.selection import DevSelection, mean_main_metric
from cdco_core.training.trainer import StageInputs, dev_scorer, run_stage


class _Weights:
    """The two methods DevSelection uses of a model: one tensor, set by the test between checks."""

    def __init__(self) -> None:
        self.w = torch.zeros(2)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": self.w}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.w = state["w"].clone()


def test_the_best_check_is_kept_and_patience_stops_the_stage() -> None:
    scores = iter([0.5, 0.7, 0.6, 0.7, 0.9])
    model = _Weights()
    sel = DevSelection(lambda m: (next(scores), {"t": 0.0}), every=2, steps=10, patience=2)
    assert [d for d in range(1, 11) if sel.due(d)] == [2, 4, 6, 8, 10]
    stops = []
    for step in (2, 4, 6, 8):
        model.w = torch.full((2,), float(step))  # the weights "at" this step
        stops.append(sel.check(model, step))
    assert stops == [False, False, False, True]  # 0.6 and an equal 0.7 are no gain: two checks without one
    model.w = torch.full((2,), 8.0)
    record = sel.finish(model, last_step=8)
    assert torch.equal(model.w, torch.full((2,), 4.0))  # the weights of the best check (step 4)
    assert record["best_step"] == 4 and record["best_score"] == 0.7 and record["kept"] == "best"
    assert record["stopped_early"] and [c["step"] for c in record["curve"]] == [2, 4, 6, 8]


def test_keep_best_off_keeps_the_last_weights_and_state_round_trips() -> None:
    model = _Weights()
    sel = DevSelection(lambda m: (float(m.w[0]), {}), every=1, steps=3, keep_best=False)
    for step, value in ((1, 3.0), (2, 1.0)):
        model.w = torch.full((2,), value)
        sel.check(model, step)
    state, tensors = sel.state()
    again = DevSelection(lambda m: (float(m.w[0]), {}), every=1, steps=3, keep_best=False)
    again.load_state(json.loads(json.dumps(state)), tensors)
    assert (again.best_step, again.best_score, again.since_best, again.curve) == (1, 3.0, 1, sel.curve)
    assert torch.equal(again.best_state["w"], torch.full((2,), 3.0))
    assert again.finish(model, 2)["kept"] == "last" and torch.equal(model.w, torch.full((2,), 1.0))


def test_an_undefined_metric_counts_as_zero() -> None:
    assert mean_main_metric({"a": 0.5, "b": float("nan")}) == 0.25


def test_dev_select_without_dev_splits_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"train.dev_select.every > 0 .* data.dev_fraction is 0"):
        load_profile("smoke", ["train.dev_select.every=5"])


@pytest.fixture
def dev_cfg():
    return load_profile("smoke", ["data.dev_fraction=0.25", "train.dev_select.every=3",
                                  "train.dev_select.patience=2", "train.checkpoint_every=2"])


def _stage_run(cfg, tmp_path, steps: int, stop_after: int | None = None):
    """A 2-task stage with dev checks; ``stop_after``: raise out of the loop after that many steps (a kill)."""
    from cdco_core.data import load_tasks

    tasks = [t for t in load_tasks(cfg.data) if t.spec.kind == "ID"]
    assert all(len(t.splits["dev"]) > 0 for t in tasks)
    torch.manual_seed(0)
    model, tok = build_multitask_model(cfg, tasks)
    examples = [task_examples(t, i) for i, t in enumerate(tasks)]
    source = BatchSource(examples, get_sampler("uniform"), 8, tok, cfg.model.max_length, seed=0)
    stage = StageConfig(name="s", groups=["all"], losses={"task": 1.0}, steps=steps, lr=5e-3)
    inp = StageInputs(cfg=cfg, method=Method(), stage=stage, stage_index=0, global_offset=0,
                      task_types={t.name: t.spec.type for t in tasks}, work_dir=tmp_path / "work",
                      dev_scorer=dev_scorer(tok, tasks, cfg.model.max_length, 32))

    def kill(info: dict) -> None:
        if stop_after is not None and info["step"] == stop_after:
            raise KeyboardInterrupt

    try:
        return model, run_stage(model, source, None, inp, on_step=kill)
    except KeyboardInterrupt:
        return model, None


def test_a_stage_scores_its_dev_splits_and_ends_with_its_best_weights(dev_cfg, tmp_path) -> None:
    model, result = _stage_run(dev_cfg, tmp_path, steps=12)
    record = result["dev_select"]
    checks = [c["step"] for c in record["curve"]]
    assert checks == list(range(3, record["last_step"] + 1, 3))
    assert len(result["history"]) == record["last_step"]
    assert set(record["curve"][0]["per_task"]) == {"rotten_tomatoes", "sms_spam"}
    best = max(record["curve"], key=lambda c: c["score"])
    assert record["best_step"] == best["step"] and record["best_score"] == best["score"]
    if record["stopped_early"]:
        assert record["last_step"] < 12
    # the kept weights score the best check's score again
    score, _ = dev_scorer(*_tok_and_tasks(dev_cfg))(model)
    assert score == pytest.approx(record["best_score"], abs=1e-9)


def _tok_and_tasks(cfg):
    from cdco_core.data import load_tasks
    from cdco_core.models.encoder import load_tokenizer

    tasks = [t for t in load_tasks(cfg.data) if t.spec.kind == "ID"]
    return load_tokenizer(cfg.model), tasks, cfg.model.max_length, 32


def test_a_resumed_stage_selects_exactly_as_an_uninterrupted_one(dev_cfg, tmp_path) -> None:
    cfg = with_overrides(dev_cfg, ["train.dev_select.patience=null"], "test")
    whole_model, whole = _stage_run(cfg, tmp_path / "whole", steps=10)
    _, cut = _stage_run(cfg, tmp_path / "cut", steps=10, stop_after=5)  # checkpoint at 4, after the check at 3
    assert cut is None
    model, resumed = _stage_run(cfg, tmp_path / "cut", steps=10)
    assert resumed["resumed_from"] == 4
    assert resumed["dev_select"]["curve"] == whole["dev_select"]["curve"]
    assert resumed["dev_select"]["best_step"] == whole["dev_select"]["best_step"]
    for k, v in whole_model.trainable_state_dict().items():
        assert torch.equal(v, model.trainable_state_dict()[k]), k
