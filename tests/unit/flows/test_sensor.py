"""The dataset sensor's logic (flows/sensor.py); its real event on a Prefect server is in tests/integration."""

from __future__ import annotations

from pathlib import Path

import yaml

from cdco_core.paths import CONF_DIR
from flows import sensor


def test_changed_datasets() -> None:
    assert sensor.changed_datasets(None, {"a": "1"}) == {}  # a baseline emits nothing
    assert sensor.changed_datasets({"a": "1", "b": "2"}, {"a": "1", "b": "3"}) == {"b": "3"}
    assert sensor.changed_datasets({"a": "1"}, {"a": "1", "c": "9"}) == {"c": "9"}  # newly configured
    assert sensor.changed_datasets({"a": "1"}, {"a": "1"}) == {}


def _profile(tmp_path: Path) -> tuple[Path, Path]:
    csv = tmp_path / "facts.csv"
    csv.write_text("text,label\n" + "".join(f"fact {i},{'ab'[i % 2]}\n" for i in range(20)), encoding="utf-8")
    raw = yaml.safe_load((CONF_DIR / "smoke.yaml").read_text(encoding="utf-8"))
    raw["data"] = {"tasks": [{"name": "facts", "kind": "KI", "type": "classification",
                              "files": {"train": str(csv)}, "text": ["text"], "label": "label"}]}
    path = tmp_path / "sensed.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path, csv


def test_sensor_records_a_baseline_then_emits_one_event_per_changed_dataset(tmp_path, monkeypatch) -> None:
    emitted = []
    monkeypatch.setattr(sensor, "emit_changed", lambda *a: emitted.append(a) or f"event-{len(emitted)}")
    profile, csv = _profile(tmp_path)

    first = sensor.dataset_sensor.fn(str(profile))
    assert first["baseline"] is True and emitted == [] and set(first["digests"]) == {"facts"}
    assert sensor.dataset_sensor.fn(str(profile))["changed"] == {}  # unchanged: silent

    csv.write_text(csv.read_text(encoding="utf-8").replace("fact 3,", "fact three,"), encoding="utf-8")
    third = sensor.dataset_sensor.fn(str(profile))
    assert third["changed"] == {"facts": third["digests"]["facts"]} != {"facts": first["digests"]["facts"]}
    assert emitted == [("smoke", "facts", third["digests"]["facts"], first["digests"]["facts"])]
    assert third["events"] == ["event-1"]
