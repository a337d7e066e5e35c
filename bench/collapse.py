"""Representation collapse of trained stages (a diagnostic for the CDCO research, issue 14; never used in training).

For each trained stage given, encodes the first N train rows of an ID task with that stage's weights and prints:
the mean norm of the pooled features, their mean pairwise cosine (1.0 = every sentence at the same point), the
cosine between the two classes' centroids, the task head's logit spread, and its accuracy on those rows.

    CDCO_HOME=... python bench/collapse.py --profile benchmark-cpu --task sst2 \
        lora_mtl:STEPS/train/lora_mtl-seed0-0-... cdco:STEPS/train/cdco-seed0-1-...
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def collapse_stats(features: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Norm, mean off-diagonal cosine, class-centroid cosine (first two classes), logit sd, accuracy."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cos = unit @ unit.T
    off = cos[~np.eye(len(unit), dtype=bool)]
    c0, c1 = unit[labels == 0].mean(0), unit[labels == 1].mean(0)
    return {"norm": round(float(np.linalg.norm(features, axis=1).mean()), 3),
            "mean_cos": round(float(off.mean()), 4),
            "centroid_cos": round(float(c0 @ c1 / np.linalg.norm(c0) / np.linalg.norm(c1)), 4),
            "logit_sd": round(float(logits.std(0).mean()), 4),
            "accuracy": round(float((logits.argmax(1) == labels).mean()), 4)}


def main() -> None:
    import torch
    from safetensors.torch import load_file

    from cdco_core.data import load_tasks
    from cdco_core.evaluation.features import encode_texts
    from cdco_core.profile import load_profile
    from cdco_core.steps.train import build_model, method_of

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="benchmark-cpu")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="profile override (method settings)")
    ap.add_argument("stages", nargs="+", help="METHOD:STAGE_DIR")
    args = ap.parse_args()
    cfg = load_profile(args.profile, args.sets)
    tasks = [t for t in load_tasks(cfg.data) if t.spec.kind == "ID"]
    task = next(t for t in tasks if t.name == args.task)
    rows = task.splits["train"].iloc[: args.rows]
    labels = rows["label"].to_numpy()
    for item in args.stages:
        name, folder = item.split(":", 1)
        method = method_of(cfg, name)
        mcfg = method.configure(cfg)
        model, tok = build_model(mcfg, method, 0, tasks)
        model.load_trainable_state_dict(load_file(f"{folder}/weights.safetensors"))
        model.eval()
        feats = encode_texts(model, tok, rows["text_a"].tolist(),
                             rows["text_b"].tolist() if task.spec.type == "pair_classification" else None,
                             max_length=mcfg.model.max_length, batch_size=64, task_id=tasks.index(task))
        with torch.no_grad():
            logits = model.head_logits(args.task, torch.from_numpy(feats)).numpy()
        print(json.dumps({"stage": folder.rstrip("/").rsplit("/", 1)[-1], **collapse_stats(feats, labels, logits)}))


if __name__ == "__main__":
    main()
