"""The three ODMS steps (embed, manifold, negatives) run from the plan on the smoke profile, strict mode, bad
input, the reducer's digest check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdco_core.data import load_tasks, task_specs
from cdco_core.errors import InputError
from cdco_core.odms.corpora import clean_corpus, odms_datasets
from cdco_core.odms.manifold import fit_manifold, load_reducer
from cdco_core.plan import build_plan
from cdco_core.profile import load_profile
from cdco_core.runner import run_plan
from cdco_core.steps.negatives import NEGATIVE_COLUMNS


def negatives_step(cfg, on_step=None) -> dict:
    """Run CDCO's negatives node and what it reads; {node id: record}."""
    return run_plan(build_plan(cfg, ["cdco"], [0]), targets=["negatives[seed0]"], on_step=on_step)


def test_smoke_negatives_step_end_to_end_and_cached(smoke_cfg):
    seen: list[dict] = []
    done = negatives_step(smoke_cfg, seen.append)
    res = done["negatives[seed0]"]
    neg = pd.read_parquet(res.path("negatives.parquet"))
    assert list(neg.columns) == NEGATIVE_COLUMNS
    tasks = {t.name: t for t in load_tasks(smoke_cfg.data)}
    assert set(neg["anchor_task"]) == {"rotten_tomatoes", "sms_spam"}
    for task, ids in neg.groupby("anchor_task")["anchor_id"]:
        assert set(ids) <= set(tasks[task].splits["train"]["example_id"])
    assert set(neg["negative_dataset"]) == {"imdb"}
    assert set(neg["negative_id"]) <= set(tasks["imdb"].splits["train"]["example_id"])
    assert (neg["raw_cosine"] <= smoke_cfg.negatives.fn_ceiling + 1e-6).all()
    per_anchor = neg.groupby("anchor_id")["rank"].agg(list)
    assert per_anchor.map(lambda r: r == list(range(1, len(r) + 1))).all()
    assert res.outputs["rows"] == len(neg) and not res.cached
    assert all(res.path(p).stat().st_size > 1000 for p in ("manifold.png", "distances.png"))
    assert {n for n in done if n.startswith("embed[")} == {"embed[rotten_tomatoes]", "embed[sms_spam]", "embed[imdb]"}
    # progress: each embedding counts its rows up to the corpus' size; the manifold reports its two phases
    for node in (n for n in done if n.startswith("embed[")):
        rows = [i["step"] for i in seen if i["node"] == node]
        assert rows == sorted(rows) and rows[-1] == done[node].outputs["rows"]
        assert {i["unit"] for i in seen if i["node"] == node} == {"row"}
    phases = [(i["step"], i["what"].split()[0]) for i in seen if i["node"].startswith("manifold[")]
    assert phases == [(0, "fit"), (1, "transform"), (2, "done")]

    again = negatives_step(smoke_cfg)
    assert all(r.cached for n, r in again.items() if not n.startswith("prepare["))
    assert again["negatives[seed0]"].digest == res.digest


def _extra_ood(tmp_path: Path) -> list[str]:
    rows = [f"protein kinase {i} binds the receptor domain in assay {i % 7}" for i in range(60)]
    pd.DataFrame({"text": rows, "label": [i % 2 for i in range(60)]}).to_csv(tmp_path / "bio.csv", index=False)
    return [f"data.tasks=[{{name: bio, kind: OOD, type: classification, files: {{train: {tmp_path}/bio.csv}}, "
            "text: [text], label: label}]"]


def test_strict_mode_excludes_the_named_domains(tmp_path):
    both = negatives_step(load_profile("smoke", _extra_ood(tmp_path)))
    table = pd.read_parquet(both["negatives[seed0]"].path("negatives.parquet"))
    assert set(table["negative_dataset"]) == {"bio", "imdb"}
    strict = negatives_step(load_profile("smoke", [*_extra_ood(tmp_path), "negatives.strict_exclude=[imdb]"]))
    assert set(pd.read_parquet(strict["negatives[seed0]"].path("negatives.parquet"))["negative_dataset"]) == {"bio"}
    assert "embed[imdb]" not in strict
    coords = pd.read_parquet(strict["manifold[seed0]"].path("coords.parquet"), columns=["dataset"])
    assert "imdb" not in set(coords["dataset"])  # out of the pool entirely, not just filtered at the end


def test_empty_pool_and_bad_strict_names_fail_clearly(smoke_cfg):
    specs = task_specs(smoke_cfg.data)
    with pytest.raises(InputError, match="OOD pool is empty: no task with kind: OOD"):
        odms_datasets(smoke_cfg, [s for s in specs if s.kind != "OOD"])
    cfg = load_profile("smoke", ["negatives.strict_exclude=[imdb]"])
    with pytest.raises(InputError, match=r"every OOD task is excluded by negatives.strict_exclude=\['imdb'\]"):
        odms_datasets(cfg, specs)
    with pytest.raises(InputError, match=r"every OOD task is excluded"):  # found when the plan is built
        build_plan(cfg, ["cdco"], [0])
    cfg = load_profile("smoke", ["negatives.strict_exclude=[nope]"])
    with pytest.raises(InputError, match=r"strict_exclude: \['nope'\] are not OOD tasks"):
        odms_datasets(cfg, specs)


def test_all_empty_texts_name_the_dataset():
    df = pd.DataFrame({"example_id": ["x:train:0", "x:train:1"], "text_a": ["  ", ""], "text_b": ["", " "]})
    with pytest.raises(InputError, match="dataset 'imdb': all 2 texts of the train split are empty"):
        clean_corpus("imdb", df)
    kept = clean_corpus("imdb", pd.concat([df, df.assign(text_a=" ok ")]))
    assert kept["text_a"].tolist() == ["ok", "ok"]


def test_manifold_is_seeded_and_the_reducer_digest_is_checked(smoke_cfg, tmp_path):
    from cdco_core.odms.manifold import save_reducer

    vecs = np.random.default_rng(0).normal(size=(120, 16)).astype(np.float32)
    a = fit_manifold(vecs, 3, 8, 0.1, 80, seed=3)
    b = fit_manifold(vecs, 3, 8, 0.1, 80, seed=3)
    assert a[0].shape == (120, 3) and len(a[2]) == 80
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])
    path = tmp_path / "reducer.joblib"
    digest = save_reducer(a[1], path)
    assert load_reducer(path, digest).n_components == 3
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(InputError, match="refusing to unpickle"):
        load_reducer(path, digest)
