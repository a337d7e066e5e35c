"""One ``cdco run``: every step of the plan runs exactly once, and the plan and the config are built once."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

pytestmark = pytest.mark.integration


def test_one_run_computes_every_node_once(monkeypatch) -> None:
    """Local mode (Prefect's temporary server, MLflow on SQLite in this test's CDCO_HOME): a cold run."""
    import cdco_core.plan
    import cdco_core.profile
    import cdco_core.steps as steps
    import cdco_core.steps.prepare as prepare_mod
    from cdco_core.profile import load_profile
    from flows import full_pipeline

    computed: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    table = steps._steps()

    def counting(step: steps.Step) -> steps.Step:
        def compute(call: steps.StepCall):
            computed[call.node.id] += 1
            return step.compute(call)

        return dataclasses.replace(step, compute=compute)

    monkeypatch.setattr(steps, "_steps", lambda: {n: counting(s) for n, s in table.items()})
    real_prepare = prepare_mod.prepare
    monkeypatch.setattr(prepare_mod, "prepare", lambda cfg, task: (computed.update([f"prepare[{task}]"]),
                                                                  real_prepare(cfg, task))[1])
    for module, name in ((cdco_core.plan, "build_plan"), (cdco_core.profile, "load_profile")):
        real = getattr(module, name)

        def wrapped(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(module, name, wrapped)

    overrides = ["orchestration.task_runner=thread", "orchestration.register_model=false",
                 "eval.methods=[cdco,lora_mtl]"]
    cfg = load_profile("smoke", overrides)
    calls.clear()
    result = full_pipeline.run_pipeline(cfg, "smoke", overrides)

    expected = set(result["steps"])
    assert expected and set(computed) == expected, sorted(expected ^ set(computed))
    assert all(n == 1 for n in computed.values()), {k: v for k, v in computed.items() if v != 1}
    assert sum(k.startswith("train[cdco/") for k in computed) == len(cfg.train.stages)
    # planned before the flow (to refuse a bad plan in one line) and once in it; the config passed validated
    assert calls["build_plan"] == 2 and calls["load_profile"] == 0
    assert not any(s["cached"] for s in result["steps"].values())
