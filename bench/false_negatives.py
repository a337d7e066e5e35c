"""False-negative rate of an ODMS negatives table (a diagnostic for the CDCO research issue, never used in training).

For anchors of an ID task whose labels share names with a pool dataset's labels (through a label map, e.g. sst2
``negative/positive`` and imdb ``neg/pos``), the share of that dataset's negatives that carry the anchor's own label,
overall and by rank (rank 1 = nearest on the manifold). 50% is what random rows of a balanced binary pool give.

    python bench/false_negatives.py --profile benchmark-cpu --negatives PATH/negatives.parquet \
        --anchor sst2 --pool imdb --map neg=negative,pos=positive
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


def main() -> None:
    from cdco_core.data import load_tasks
    from cdco_core.profile import load_profile

    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", required=True)
    ap.add_argument("--negatives", required=True)
    ap.add_argument("--anchor", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--map", required=True, help="pool label -> anchor label, e.g. neg=negative,pos=positive")
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
    print(json.dumps(false_negative_rate(neg, anchor_labels, pool_labels), indent=2))


if __name__ == "__main__":
    main()
