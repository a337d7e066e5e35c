"""The trained adapters as an MLflow pyfunc model ("models from code": this file is the model, no pickle).

Logged by :mod:`tasks.register` with these artifacts:

    base/                the clean base encoder (its own weights and tokenizer; see ``clean_base_path``)
    weights.safetensors  adapters, heads and projections (``MultiTaskModel.trainable_state_dict``)
    config.yaml          the resolved run config
    heads.json           method, seed, and the training tasks (spec, label names, train rows) in task-id order

Reloading rebuilds the method's model on ``base/`` and loads the weights: the base weights come from the
logged folder, never re-initialised from a config (the PEFT-through-mlflow.transformers trap). The weights'
sha256, recorded when the model was logged (``model_config`` and the MLmodel metadata, key
``cdco.weights_sha256``; also the registered version's tag), is checked first: a mismatch is refused.
Needs the ``cdco`` package installed where the model is loaded.

Input: a DataFrame with ``task`` (a training task's name), ``text_a`` and optional ``text_b``.
Output: a DataFrame with ``task``, ``prediction`` (class id, or the score for regression) and ``logits``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

SHA_KEY = "cdco.weights_sha256"


class WeightsMismatchError(RuntimeError):
    """The logged weights differ from the digest recorded when the model was logged."""


class CdcoAdapterModel(PythonModel):
    """Multi-task adapters + heads on the logged base encoder."""

    def load_context(self, context: Any) -> None:
        expected = (getattr(context, "model_config", None) or {}).get(SHA_KEY) or _mlmodel_sha(context.artifacts)
        verify_weights(context.artifacts["weights"], expected)
        self.model, self.tokenizer, self.max_length = load_adapter_model(context.artifacts)

    # MLflow reads predict()'s input hint: Any makes it warn that it cannot validate, no hint that one is missing;
    # a DataFrame is accepted as is and checked against the signature logged with the model
    # (tasks.register.signature).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return predict_frame(self.model, self.tokenizer, self.max_length, model_input)


def _mlmodel_sha(artifacts: dict[str, str]) -> str | None:
    """The digest in the MLmodel file's metadata (models logged before ``model_config`` carried it)."""
    from mlflow.models import Model

    model_dir = Path(artifacts["weights"]).parent.parent  # <model>/artifacts/weights.safetensors
    if not (model_dir / "MLmodel").exists():
        return None
    return (Model.load(str(model_dir)).metadata or {}).get(SHA_KEY)


def verify_weights(path: str | Path, expected: str | None) -> None:
    """Refuse weights whose sha256 is not ``expected``.

    Raises:
        WeightsMismatchError: no digest recorded, or the file's digest differs (names both).
    """
    from cdco_core.io import sha256_file

    if not expected:
        raise WeightsMismatchError(f"{path}: no weights sha256 recorded with this model ({SHA_KEY}); "
                                   "register it again with this version of cdco")
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsMismatchError(
            f"{Path(path).name} has sha256 {actual[:12]}..., the model was registered with {expected[:12]}...: "
            f"the weights at {path} were changed after logging; refusing to load them"
        )


def load_adapter_model(artifacts: dict[str, str]) -> tuple[Any, Any, int]:
    """(model in eval mode, tokenizer, max_length) from the logged artifacts."""
    import pandas as pd
    import torch
    import yaml
    from safetensors.torch import load_file

    from cdco_core.config import Config
    from cdco_core.data import TaskData
    from cdco_core.data.spec import TaskSpec
    from cdco_core.methods import get_method

    heads = json.loads(open(artifacts["heads"], encoding="utf-8").read())
    raw = yaml.safe_load(open(artifacts["config"], encoding="utf-8").read())
    raw["model"]["source"] = artifacts["base"]  # the logged clean base, not wherever it came from
    base = Config.model_validate(raw)
    method = get_method(heads["method"], base)
    cfg = method.configure(base)
    tasks = [TaskData(spec=TaskSpec.model_validate(t["spec"]), label_names=t["label_names"],
                      splits={"train": pd.DataFrame(index=range(t["train_rows"]))}, digests={})
             for t in heads["tasks"]]
    torch.manual_seed(heads["seed"])
    model, tokenizer = method.build_model(cfg, tasks)
    model.load_trainable_state_dict(load_file(artifacts["weights"]))
    model.set_trainable([], train_heads=False)
    model.eval()
    return model, tokenizer, cfg.model.max_length


def predict_frame(model: Any, tokenizer: Any, max_length: int, frame: Any, batch_size: int = 64) -> Any:
    """Logits per row, grouped by task (each task's rows go through its head)."""
    import pandas as pd
    import torch

    from cdco_core.training.batches import tokenize

    unknown = sorted(set(frame["task"]) - set(model.task_names))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in column 'task'; this model has heads for {model.task_names}")
    out = pd.DataFrame({"task": frame["task"].to_numpy()}, index=frame.index)
    out["logits"] = None
    for task, rows in frame.groupby("task").groups.items():
        sub = frame.loc[rows]
        tid = model.task_names.index(task)
        logits = []
        for s in range(0, len(sub), batch_size):
            part = sub.iloc[s:s + batch_size]
            b = part["text_b"].fillna("").tolist() if "text_b" in part else None
            enc = tokenize(tokenizer, part["text_a"].tolist(), b, max_length)
            with torch.no_grad():
                ids = torch.full((len(part),), tid, dtype=torch.long)
                pooled = model.encode(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], ids)
                logits.append(model.head_logits(task, pooled))  # (N, C)
        out.loc[rows, "logits"] = pd.Series([r.tolist() for r in torch.cat(logits)], index=rows)
    out["prediction"] = [float(v[0]) if len(v) == 1 else int(max(range(len(v)), key=v.__getitem__))
                         for v in out["logits"]]
    return out


mlflow.models.set_model(CdcoAdapterModel())
