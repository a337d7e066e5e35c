"""ODMS: out-of-domain manifold sampling.

embed (frozen encoder, mean pooling, cached Parquet shards) -> manifold (UMAP, cosine) -> FAISS index over the
OOD pool's manifold coordinates -> hard negatives per ID anchor (Parquet) and plots. Each stage is a plain
function; :mod:`cdco_core.steps` (embed, manifold, negatives) runs them as content-addressed steps.
"""

from cdco_core.models.pooling import mean_pool
from cdco_core.odms.embed import embed_texts

__all__ = ["embed_texts", "mean_pool"]
