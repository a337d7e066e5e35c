"""A garbage weights_digests.json memo is ignored and rewritten, never a traceback."""

from __future__ import annotations

import pytest

from cdco_core.io import sha256_file, sha256_json
from cdco_core.models.encoder import weights_digest


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\"x\"", "{\"k\": 3}", "\x00\xff"])
def test_garbage_memo_is_a_miss(tmp_path, cdco_home, content):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    expected = sha256_json([sha256_file(folder / "model.safetensors")])
    assert weights_digest(folder) == expected
    memo = cdco_home / "cache" / "weights_digests.json"
    memo.write_text(content)
    assert weights_digest(folder) == expected


def test_poisoned_memo_entry_is_not_trusted_blindly(tmp_path, cdco_home):
    """A memo entry that is not a 64-hex digest is recomputed."""
    import json

    folder = tmp_path / "m"
    folder.mkdir()
    f = folder / "model.safetensors"
    f.write_bytes(b"weights")
    expected = weights_digest(folder)
    memo = cdco_home / "cache" / "weights_digests.json"
    d = json.loads(memo.read_text())
    d = {k: ["list"] for k in d}
    memo.write_text(json.dumps(d))
    assert weights_digest(folder) == expected
