"""What cache keys read of the encoder: its content, never where it lies.

A key that held the model folder's path made the same MiniLM in another virtualenv (another clone, a container, a
worktree) a different computation: every step that runs the encoder, and all that follows, was computed again in a
shared ``CDCO_HOME`` (measured: a comparison resumed from a second worktree re-embedded everything).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cdco_core.config import ModelConfig
from cdco_core.models.encoder import model_identity


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    (root / "tokenizer.json").write_text('{"vocab": ["a", "b"]}', encoding="utf-8")
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}', encoding="utf-8")
    (root / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n", encoding="utf-8")
    return root


def _key(folder: Path) -> dict[str, str]:
    return model_identity(ModelConfig(source=str(folder))).as_dict()


def test_the_same_model_in_two_places_is_one_key(tmp_path, cdco_home) -> None:
    a = _folder(tmp_path / "venv-a" / "model")
    b = tmp_path / "clone-b" / "model"
    shutil.copytree(a, b)
    assert model_identity(ModelConfig(source=str(a))).path != model_identity(ModelConfig(source=str(b))).path
    assert _key(a) == _key(b)
    assert str(tmp_path) not in repr(_key(a))
    # a named source keeps its name: the package's MiniLM, wherever the virtualenv is
    assert model_identity(ModelConfig(source="minilm")).as_dict()["source"] == "minilm"


def test_what_the_model_is_made_of_changes_the_key(tmp_path, cdco_home) -> None:
    base = _key(_folder(tmp_path / "m0"))
    for i, edit in enumerate([("tokenizer.json", '{"vocab": ["a", "c"]}'), ("config.json", '{"model_type": "x"}'),
                              ("1_Pooling/config.json", '{"pooling_mode_cls_token": true}')], start=1):
        other = _folder(tmp_path / f"m{i}")
        (other / edit[0]).write_text(edit[1], encoding="utf-8")
        assert _key(other) != base, edit[0]
    weights = _folder(tmp_path / "w")
    (weights / "model.safetensors").write_bytes(b"\x01weights" * 100)
    assert _key(weights) != base
    hidden = _folder(tmp_path / "h")  # version-control metadata is not the model
    (hidden / ".gitattributes").write_text("other\n", encoding="utf-8")
    assert _key(hidden) == base
