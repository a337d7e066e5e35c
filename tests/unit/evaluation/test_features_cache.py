"""A truncated or CRC-failing cached features file is recomputed, never a traceback; nothing is unpickled."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from cdco_core.evaluation import features as F


class _Task:
    name = "t"
    digests = {"test": "d" * 64}
    splits = {"test": pd.DataFrame({"example_id": ["t:0", "t:1"], "text_a": ["a", "b"], "text_b": ["", ""],
                                    "label": [0, 1]})}


@pytest.fixture
def fake_encode(monkeypatch):
    calls = []

    def encode(model, tokenizer, a, b, **kw):
        calls.append(len(a))
        return np.arange(len(a) * 3, dtype=np.float32).reshape(len(a), 3)

    monkeypatch.setattr(F, "encode_texts", encode)
    return calls


def _run():
    return F.split_features(None, None, _Task(), "test", model_digest="m", max_length=16, batch_size=4)


def _cache_file():
    return F.feature_cache_path("t", "test", {"model": "m", "data": "d" * 64, "max_length": 16, "task_id": None})


def test_truncated_npz_is_recomputed(fake_encode):
    first, cached = _run()
    assert not cached and fake_encode == [2]
    path = _cache_file()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again, cached = _run()
    assert not cached and fake_encode == [2, 2]
    np.testing.assert_array_equal(again.x, first.x)
    assert _run()[1]  # rewritten: a hit next time


def test_crc_failing_npz_is_recomputed(fake_encode):
    _run()
    path = _cache_file()
    # Flip bytes inside the stored (uncompressed) array data: the zip's CRC-32 no longer matches.
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("x.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 128 + 4
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile):  # the corruption is real: numpy's reader trips on the CRC
        with np.load(path, allow_pickle=False) as z:
            z["x"]
    _, cached = _run()
    assert not cached and fake_encode == [2, 2]


def test_object_array_in_cache_is_not_unpickled(fake_encode, tmp_path):
    _run()
    path = _cache_file()
    np.savez(path.with_suffix(""), x=np.array([object()], dtype=object), labels=np.zeros(2),
             example_ids=np.array(["a", "b"]), mask=np.zeros(0, bool))
    _, cached = _run()
    assert not cached  # refused (allow_pickle=False), recomputed
