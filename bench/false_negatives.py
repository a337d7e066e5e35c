"""False-negative rate of an ODMS negatives table (a diagnostic for the CDCO research issue, never used in training).

For anchors of an ID task whose labels share names with a pool dataset's labels (through a label map, e.g. sst2
``negative/positive`` and imdb ``neg/pos``), the share of that dataset's negatives that carry the anchor's own label,
overall and by rank (rank 1 = nearest on the manifold). 50% is what random rows of a balanced binary pool give.

    python bench/false_negatives.py --profile benchmark-cpu --negatives PATH/negatives.parquet \
        --anchor sst2 --pool imdb --map neg=negative,pos=positive

With ``--weights STAGE_DIR --method NAME`` it also measures ``cdco_r``'s label-aware filter as that trained stage
would apply it: the anchor task's head labels each pool negative; a pair is dropped when the head gives the
negative the anchor's label. It reports the share of pairs dropped, the false-negative rate among the pairs kept
(the filter's effect) and among those dropped (its precision).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd


def false_negative_rate(neg: pd.DataFrame, anchor_labels: pd.Series, pool_labels: pd.Series) -> dict:
    """``neg``: rows of one anchor task and one pool dataset; labels: example_id -> label name (mapped)."""
    a = neg["anchor_id"].map(anchor_labels)
    b = neg["negative_id"].map(pool_labels)
    same = a == b
    by_rank = same.groupby(neg["rank"]).mean().round(4).to_dict()
    base = float((pool_labels.value_counts(normalize=True) ** 2).sum())  # P(same label): random rows, balanced anchors
    return {"pairs": int(len(neg)), "same_label": round(float(same.mean()), 4), "by_rank": by_rank,
            "random_rows_expectation": round(base, 4)}


def head_predictions(profile: str, method: str, weights: str, anchor: str, pool_task, seed: int = 0) -> pd.Series:
    """example_id -> the anchor head's predicted label name for every train row of ``pool_task``."""
    import torch
    from safetensors.torch import load_file

    from cdco_core.data import load_tasks
    from cdco_core.evaluation.features import encode_texts
    from cdco_core.profile import load_profile
    from cdco_core.steps.train import build_model, method_of

    cfg = load_profile(profile)
    method = method_of(cfg, method)
    mcfg = method.configure(cfg)
    tasks = [t for t in load_tasks(mcfg.data) if t.spec.kind == "ID"]
    model, tok = build_model(mcfg, method, seed, tasks)
    model.load_trainable_state_dict(load_file(f"{weights}/weights.safetensors"))
    model.eval()
    rows = pool_task.splits["train"]
    feats = encode_texts(model, tok, rows["text_a"].tolist(), None, max_length=mcfg.model.max_length, batch_size=64)
    with torch.no_grad():
        pred = model.head_logits(anchor, torch.from_numpy(feats)).argmax(-1).numpy()
    names = next(t for t in tasks if t.name == anchor).label_names
    return pd.Series([names[i] for i in pred], index=rows["example_id"])


def filter_effect(neg: pd.DataFrame, anchor_labels: pd.Series, pool_labels: pd.Series, predicted: pd.Series) -> dict:
    """Share of pairs the label-aware filter drops, and the false-negative rate among kept and dropped pairs."""
    a = neg["anchor_id"].map(anchor_labels)
    dropped = neg["negative_id"].map(predicted) == a
    same = neg["negative_id"].map(pool_labels) == a
    return {"dropped": round(float(dropped.mean()), 4),
            "same_label_kept": round(float(same[~dropped].mean()), 4) if (~dropped).any() else None,
            "same_label_dropped": round(float(same[dropped].mean()), 4) if dropped.any() else None,
            "head_accuracy_on_pool": round(float((predicted == pool_labels.reindex(predicted.index)).mean()), 4)}


def main() -> None:
    from cdco_core.data import load_tasks
    from cdco_core.profile import load_profile

    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", required=True)
    ap.add_argument("--negatives", required=True)
    ap.add_argument("--anchor", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--map", required=True, help="pool label -> anchor label, e.g. neg=negative,pos=positive")
    ap.add_argument("--weights", help="a trained stage's folder (CDCO_HOME/steps/train/...): measure the filter")
    ap.add_argument("--method", default="cdco_r")
    args = ap.parse_args()
    mapping = dict(kv.split("=", 1) for kv in args.map.split(","))
    tasks = {t.name: t for t in load_tasks(load_profile(args.profile).data)}
    anchor, pool = tasks[args.anchor], tasks[args.pool]
    at = anchor.splits["train"]
    pt = pool.splits["train"]
    anchor_labels = pd.Series([anchor.label_names[i] for i in at["label"]], index=at["example_id"])
    pool_labels = pd.Series([mapping[pool.label_names[i]] for i in pt["label"]], index=pt["example_id"])
    neg = pd.read_parquet(args.negatives)
    neg = neg[(neg.anchor_task == args.anchor) & (neg.negative_dataset == args.pool)]
    out = {"table": false_negative_rate(neg, anchor_labels, pool_labels)}
    if args.weights:
        predicted = head_predictions(args.profile, args.method, args.weights, args.anchor, pool)
        out["label_aware_filter"] = filter_effect(neg, anchor_labels, pool_labels, predicted)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
