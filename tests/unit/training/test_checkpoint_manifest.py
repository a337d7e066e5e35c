"""Checkpoints carry a sha256 manifest; a corrupted one is discarded with a warning and the previous good one
(or the stage start) is used instead of resuming from damaged state."""

from __future__ import annotations

import json

import pytest
import torch

from cdco_core.config import StageConfig
from cdco_core.methods.base import Method
from cdco_core.models.multitask import build_multitask_model
from cdco_core.profile import load_profile as load_config
from cdco_core.samplers import get_sampler
from cdco_core.training.batches import BatchSource, task_examples
from cdco_core.training.checkpoint import MANIFEST, latest_checkpoint, verify_checkpoint
from cdco_core.training.trainer import StageInputs, run_stage

STAGE = StageConfig(name="t", groups=["all"], losses={"task": 1.0}, steps=7, lr=1e-2)


def _run(tasks, work):
    cfg = load_config("smoke", ["train.checkpoint_every=2"])
    torch.manual_seed(0)
    model, tok = build_multitask_model(cfg, tasks)
    examples = [task_examples(t, i)[:8] for i, t in enumerate(tasks)]
    source = BatchSource(examples, get_sampler("uniform"), 8, tok, cfg.model.max_length, seed=0)
    inp = StageInputs(cfg=cfg, method=Method(), stage=STAGE, stage_index=0, global_offset=0,
                      task_types={t.name: t.spec.type for t in tasks}, work_dir=work)
    return run_stage(model, source, None, inp)


@pytest.fixture
def work(id_tasks, tmp_path):
    """A stage run to the end: checkpoints at steps 2, 4, 6; the newest two are kept."""
    work = tmp_path / "work"
    _run(id_tasks[:1], work)
    assert sorted(p.name for p in work.glob("ckpt-*")) == ["ckpt-00000004", "ckpt-00000006"]
    for p in work.glob("ckpt-*"):
        assert (p / MANIFEST).exists() and verify_checkpoint(p) is None
    return work


def _flip(path, at=-100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_weights_fall_back_to_the_previous_checkpoint(work, id_tasks):
    _flip(work / "ckpt-00000006" / "weights.safetensors")
    with pytest.warns(RuntimeWarning, match=r"ckpt-00000006.*weights.safetensors.*sha256"):
        assert latest_checkpoint(work).name == "ckpt-00000004"
    assert not (work / "ckpt-00000006").exists()  # discarded, never tried again
    assert _run(id_tasks[:1], work)["resumed_from"] == 4


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_bad_state_json_falls_back(work, id_tasks, damage):
    state = work / "ckpt-00000006" / "state.json"
    state.write_text(state.read_text()[:40] if damage == "truncate" else "\x00garbage{")
    with pytest.warns(RuntimeWarning, match="state.json"):
        assert _run(id_tasks[:1], work)["resumed_from"] == 4


def test_every_checkpoint_bad_restarts_the_stage(work, id_tasks):
    _flip(work / "ckpt-00000006" / "optimizer.pt")
    (work / "ckpt-00000004" / MANIFEST).write_text("[1, 2]")
    with pytest.warns(RuntimeWarning):
        assert _run(id_tasks[:1], work)["resumed_from"] is None


def test_a_checkpoint_without_manifest_is_not_trusted(work):
    (work / "ckpt-00000006" / MANIFEST).unlink()
    with pytest.warns(RuntimeWarning, match="no manifest"):
        assert latest_checkpoint(work).name == "ckpt-00000004"


def test_manifest_lists_every_file(work):
    manifest = json.loads((work / "ckpt-00000006" / MANIFEST).read_text())
    assert set(manifest["files"]) == {"weights.safetensors", "optimizer.pt", "state.safetensors", "state.json"}
