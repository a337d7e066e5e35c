"""Embedding throughput: ours (``cdco_core.odms.embed.embed_texts``) against sentence-transformers and a naive loop.

Same process, same model folder (all-MiniLM-L6-v2), same texts, same batch size, same truncation (the peer's
``max_seq_length``). The texts are real and of mixed length: an equal seeded share of ten mirror datasets, from
CoLA/SST-2 sentences to IMDB reviews. To keep the machine's drifting load from favouring whoever runs last, the
texts are cut into chunks and the three contenders take turns per chunk (order rotated every chunk).

Also measured: the peak resident memory of ``cdco step embed --profile demo`` in a fresh process and CDCO_HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import comparison

SOURCES = [("sst2", "train", "sentence"), ("cola", "train", "sentence"), ("mrpc", "train", "sentence1"),
           ("chemprot", "train", "text"), ("citation_intent", "train", "text"), ("scicite", "train", "text"),
           ("ag_news", "train", "text"), ("imdb", "train", "text"), ("amazon_multidomain", "train", "text"),
           ("fever", "validation", "claim")]
BATCH_SIZE = 64  # the peer's batch_size and our max_batch_size
BATCH_TOKENS = 8192  # our padded-token budget per pass (the default embed.batch_tokens)


def mirror_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` real texts: an equal seeded sample from each mirror dataset in SOURCES, shuffled together."""
    import pandas as pd

    from cdco_core.data.sources import default_mirror_dir

    root = Path(default_mirror_dir())
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for name, split, col in SOURCES:
        values = pd.read_parquet(root / name / f"{split}.parquet", columns=[col])[col].astype(str)
        texts += values.iloc[rng.choice(len(values), n // len(SOURCES), replace=False)].tolist()
    rng.shuffle(texts)
    return texts


def naive_loop(model: Any, tok: Any, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """What a user writes first: fixed-size batches in input order, padded to the batch's longest, float32."""
    import torch

    from cdco_core.models.pooling import mean_pool

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            pooled = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def _contenders(max_length: int) -> tuple[dict[str, Any], Any]:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from cdco_core.models.encoder import minilm_path
    from cdco_core.odms.embed import embed_texts, resolve_dtype

    folder = str(minilm_path())
    peer = SentenceTransformer(folder, device="cpu")
    peer.max_seq_length = max_length
    tok = AutoTokenizer.from_pretrained(folder)
    fp32 = AutoModel.from_pretrained(folder).eval()
    ours_model = AutoModel.from_pretrained(folder).eval().to(resolve_dtype("auto"))
    torch.set_grad_enabled(False)
    return {
        "peer": lambda t: peer.encode(t, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True),
        "ours": lambda t: embed_texts(ours_model, tok, t, max_length=max_length, batch_tokens=BATCH_TOKENS,
                                      max_batch_size=BATCH_SIZE),
        "naive": lambda t: naive_loop(fp32, tok, t, BATCH_SIZE, max_length),
    }, tok


def measure_throughput(texts: list[str], chunks: int, max_length: int = 256) -> dict[str, Any]:
    """Time each contender on the same texts, taking turns per chunk; embeddings kept for the cosine check."""
    fns, tok = _contenders(max_length)
    for fn in fns.values():
        fn(texts[:32])  # warm-up: allocator, oneDNN kernels, tokenizer caches
    names = list(fns)
    seconds = dict.fromkeys(names, 0.0)
    vecs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for c, part in enumerate(np.array_split(np.arange(len(texts)), chunks)):
        sub = [texts[i] for i in part]
        for name in names[c % 3:] + names[: c % 3]:
            t0 = time.perf_counter()
            vecs[name].append(fns[name](sub))
            seconds[name] += time.perf_counter() - t0
    tokens = sum(len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"])
    emb = {n: np.concatenate(v) for n, v in vecs.items()}
    return {"seconds": seconds, "tokens": tokens, "emb": emb}


def demo_embed_peak_rss(profile: str) -> dict[str, Any]:
    """Run the ``embed`` steps of ``profile`` in a fresh process and CDCO_HOME; its peak RSS (ru_maxrss)."""
    code = ("import json, resource, time; from cdco_core.profile import load_profile; "
            "from cdco_core.plan import build_plan; from cdco_core.runner import run_plan; t = time.perf_counter(); "
            f"p = build_plan(load_profile({profile!r})); ids = [n.id for n in p.of_step('embed')]; "
            "r = run_plan(p, ids); "
            "print(json.dumps({'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "'rows': sum(r[i].outputs['rows'] for i in ids), 'seconds': time.perf_counter() - t, "
            "'dtype': r[ids[0]].outputs['dtype']}))")
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "CDCO_HOME": home, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent, check=True)
    return {"profile": profile, **json.loads(proc.stdout.strip().splitlines()[-1])}


def run(quick: bool = False) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    memory = demo_embed_peak_rss("smoke" if quick else "demo")  # first: no model loaded in this process yet
    n = 500 if quick else 5000
    texts = mirror_sentences(n)
    m = measure_throughput(texts, chunks=3 if quick else 6)
    s, peer = m["seconds"], m["emb"]["peer"]
    cos_ours = (m["emb"]["ours"] * peer).sum(axis=1)  # every row: unit vectors, so the dot is the cosine
    cos_naive = (m["emb"]["naive"] * peer).sum(axis=1)
    rate = {k: n / v for k, v in s.items()}
    extra = {"min_cosine_to_peer": round(float(cos_ours.min()), 6), "cosine_bound": 0.999,
             "meets_cosine": bool(cos_ours.min() >= 0.999),
             "tokens_per_s": {k: round(m["tokens"] / v, 1) for k, v in s.items()}}
    return {
        "comparisons": [
            comparison("embed_vs_sentence_transformers", rate["ours"], rate["peer"], "sentences/s", True, 1.25,
                       **extra),
            comparison("embed_vs_naive_unsorted_loop", rate["ours"], rate["naive"], "sentences/s", True, 1.0,
                       naive_min_cosine_to_peer=round(float(cos_naive.min()), 6)),
        ],
        "setup": {"sentences": n, "real_tokens": m["tokens"], "sources": [s[0] for s in SOURCES],
                  "batch_size": BATCH_SIZE, "batch_tokens": BATCH_TOKENS, "max_length": 256,
                  "ours_dtype": str(_ours_dtype()), "seconds": {k: round(v, 2) for k, v in s.items()}},
        "memory": memory,
    }


def _ours_dtype() -> Any:
    from cdco_core.odms.embed import resolve_dtype

    return resolve_dtype("auto")
