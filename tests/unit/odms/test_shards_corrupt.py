"""A shard sidecar that parses as JSON but is not an object is a cache miss, not a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from cdco_core.odms.shards import shard_status, sidecar_path, vectors_table, write_shard


@pytest.mark.parametrize("content", ["[1, 2, 3]", "42", "\"text\"", "null", "{\"key\": [\"x\"]}"])
def test_sidecar_that_is_not_an_object_is_a_miss(tmp_path, content):
    path = tmp_path / "shard-00000.parquet"
    write_shard(path, vectors_table(["a", "b"], "d", np.ones((2, 4), np.float32)), key="k")
    assert shard_status(path, "k") is not None
    sidecar_path(path).write_text(content)
    assert shard_status(path, "k") is None
