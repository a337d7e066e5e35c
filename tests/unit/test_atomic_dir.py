"""cdco_core.io.atomic_dir: republishing a directory never leaves a moment where it is missing (two DDP ranks
publish the same stage while one of them already reads it)."""

from __future__ import annotations

import threading

from cdco_core.io import atomic_dir


def test_republishing_never_hides_the_directory(tmp_path) -> None:
    target = tmp_path / "stage"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("0", encoding="utf-8")
    missing, stop = [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if not (target / "weights").exists():
                missing.append(1)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(200):
            with atomic_dir(target) as tmp:
                (tmp / "weights").write_text(str(i), encoding="utf-8")
    finally:
        stop.set()
        t.join()
    assert missing == []
    assert (target / "weights").read_text(encoding="utf-8") == "199"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]  # the replaced copies are gone
