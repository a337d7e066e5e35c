"""The architecture's promises: a pure library, no import cycle, one key per step that follows the code."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import textwrap

import pytest

import cdco_core
from cdco_core import cache

ORCHESTRATION = ("prefect", "mlflow", "flows", "tasks", "bench", "cli")


def library_modules() -> list[str]:
    return ["cdco_core", *(m.name for m in pkgutil.walk_packages(cdco_core.__path__, "cdco_core."))]


def test_library_imports_with_orchestration_blocked():
    """Every cdco_core module imports in a process where prefect, mlflow, flows, tasks, bench and cli cannot."""
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, sys
        BLOCKED = {ORCHESTRATION!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"cdco_core imported {{name}}")
        sys.meta_path.insert(0, Block())
        for m in {library_modules()!r}:
            importlib.import_module(m)
        print("imported", len({library_modules()!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "imported" in proc.stdout


def test_no_import_cycle_inside_the_library():
    """Imports at module level and inside functions alike (not those under TYPE_CHECKING)."""
    graph = {m: cache.imports_of(m) for m in library_modules()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(v):], v]))
            if v in graph and v not in state:
                visit(v)
        path.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert len(graph) > 40  # the walk saw the library, not an empty package


def test_the_cycle_finder_sees_a_function_level_import(tmp_path):
    """The walker the cycle test relies on reads imports inside functions and skips TYPE_CHECKING blocks."""
    root = tmp_path / "cdco_core"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cdco_core.c\n"
                               "def f():\n    from cdco_core import b\n")
    (root / "b.py").write_text("")
    (root / "c.py").write_text("")
    assert cache.imports_of("cdco_core.a", root) == {"cdco_core", "cdco_core.b"}


def test_code_digest_follows_the_step_not_the_whole_library():
    embed = set(cache.import_closure("cdco_core.steps.embed"))
    train = set(cache.import_closure("cdco_core.steps.train"))
    assert "cdco_core.losses" in train and "cdco_core.training.trainer" in train
    assert "cdco_core.losses" not in embed and "cdco_core.training.trainer" not in embed
    assert "cdco_core.odms.embed" in embed and "cdco_core.models.encoder" in embed
    # a method's package is not pulled in through the registry: each train step adds its own method
    assert "cdco_core.methods.ego_plm.method" not in train


def test_the_code_digest_reads_code_not_comments_docstrings_or_layout():
    base = 'import os\n\n\ndef f(x=1):\n    return os.sep * x\n\n\nclass C:\n    y = 2\n'
    same = ('"""Module doc."""\nimport os\n# a comment\n\ndef f(x=1):\n    """Doc."""\n    return (os.sep\n'
            '            * x)  # why\n\nclass C:\n    """Doc."""\n\n    y = 2\n')
    assert cache.code_text(same) == cache.code_text(base)
    for edit in ("x=2):", "os.sep + x", "y = 3", "def g(x=1)"):  # a default, an operator, a value, a name
        old = {"x=2):": "x=1):", "os.sep + x": "os.sep * x", "y = 3": "y = 2", "def g(x=1)": "def f(x=1)"}[edit]
        assert cache.code_text(base.replace(old, edit)) != cache.code_text(base), edit
    # a string that is not a docstring is code: it is kept
    assert cache.code_text(base + "z = 'text'\n") != cache.code_text(base + "z = 'other'\n")


def test_editing_a_training_source_recomputes_the_stage_and_nothing_else(tmp_path, monkeypatch):
    """The stale-code trap: append a line to losses.py in a copy of the package; the stage must train again."""
    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_plan
    from cdco_core.steps import get_step, node_key

    cfg = load_profile("smoke", ["train.stages.0.steps=2", "train.stages.1.steps=1", "train.stages.2.steps=1",
                                 "train.stages.3.steps=1"])
    plan = build_plan(cfg, ["lora_mtl"], [0])
    first = run_plan(plan)
    stage = plan.last_stage("lora_mtl", 0)
    embed_node = build_plan(cfg, ["cdco"], [0]).nodes["embed[imdb]"]
    embed_code = get_step("embed").code(cfg, embed_node)

    copy = tmp_path / "cdco_core"
    shutil.copytree(cache.SOURCE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "losses.py", "a", encoding="utf-8") as fh:
        fh.write("\n_EDIT_PROBE = 1\n")
    monkeypatch.setattr(cache, "SOURCE_ROOT", copy)

    assert get_step("embed").code(cfg, embed_node) == embed_code  # embedding code did not change
    inputs = {i: first[i] for i in stage.inputs}
    assert node_key(cfg, stage, inputs) != first[stage.id].key
    second = run_plan(plan)
    assert not second[stage.id].cached  # trained again under the new key
    assert second[stage.id].key != first[stage.id].key
    third = run_plan(plan)
    assert third[stage.id].cached and third[stage.id].key == second[stage.id].key  # and cached from then on


def test_a_tampered_output_is_recomputed_not_trusted(monkeypatch):
    """metrics.json edited to claim 0.99 overall: the record no longer verifies, the evaluation runs again."""
    import json

    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_plan

    cfg = load_profile("smoke", ["train.stages.0.steps=2", "train.stages.1.steps=1", "train.stages.2.steps=1",
                                 "train.stages.3.steps=1"])
    plan = build_plan(cfg, ["lora_mtl"], [0])
    first = run_plan(plan)
    rec = first["evaluate[lora_mtl/seed0]"]
    for name in ("metrics.json", "outputs.json"):
        doc = json.loads(rec.path(name).read_text())
        doc["averages"]["overall"] = 0.99
        rec.path(name).write_text(json.dumps(doc))
    again = run_plan(plan)["evaluate[lora_mtl/seed0]"]
    assert not again.cached
    assert again.outputs["averages"]["overall"] == rec.outputs["averages"]["overall"] != 0.99


def test_two_processes_on_the_same_stage_train_it_once(cdco_home):
    """Started together on one CDCO_HOME: one process trains and publishes, the other waits on the step's lock
    and reads the published record (never a live checkpoint of the other)."""
    import json
    import os

    code = textwrap.dedent("""
        import json, sys
        from cdco_core.plan import build_plan
        from cdco_core.profile import load_profile
        from cdco_core.runner import run_plan
        cfg = load_profile("smoke", ["train.stages.0.steps=3", "train.stages.1.steps=1", "train.stages.2.steps=1",
                                     "train.stages.3.steps=1"])
        plan = build_plan(cfg, ["lora_mtl"], [0])
        node = plan.last_stage("lora_mtl", 0).id
        rec = run_plan(plan, [node])[node]
        print(json.dumps({"cached": rec.cached, "key": rec.key, "weights": rec.outputs["weights_sha256"]}))
    """)
    env = {**os.environ, "CDCO_HOME": str(cdco_home), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)  # a hang guard, not a speed target
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["cached"] for o in outs) == [False, True]  # trained once
    assert outs[0]["key"] == outs[1]["key"] and outs[0]["weights"] == outs[1]["weights"]


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]"], ids=["empty", "garbage", "not-an-object"])
def test_a_damaged_stage_meta_json_is_a_miss_not_a_traceback(content):
    """Issue 17: an empty or garbage stage ``meta.json`` crashed every later run; it is recomputed instead."""
    import json

    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_plan

    cfg = load_profile("smoke", ["train.stages.0.steps=2"])
    plan = build_plan(cfg, ["lora_mtl"], [0])
    stage = plan.of_step("train")[0].id
    first = run_plan(plan, [stage])[stage]
    meta = json.loads(first.path("meta.json").read_text())
    first.path("meta.json").write_bytes(content)
    again = run_plan(plan, [stage])[stage]
    assert not again.cached and json.loads(again.path("meta.json").read_text()) == meta
