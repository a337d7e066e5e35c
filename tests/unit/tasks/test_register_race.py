"""Two runs that finish at once register the same weights once (issue 17: versions 1 and 2 for one sha256).

Two processes, released together from a barrier, call ``tasks.register.register_model`` with the same weights
against one real MLflow SQLite store. Without the find-or-register lock both find no version and both register
(measured: versions 1 and 2); with it one registers and the other reuses that version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_for_file

ROOT = Path(__file__).resolve().parents[3]
OVERRIDES = ["orchestration.experiment=register-race"]

# Everything slow (imports, the parent run) happens before the barrier, so the two registrations overlap.
REGISTER = """
import json, os, sys, time
from pathlib import Path
import mlflow.pyfunc  # noqa: F401
from cdco_core.cache import Record
from cdco_core.models import encoder  # noqa: F401
from cdco_core.profile import load_profile
from tasks import tracking
from tasks.register import register_model
args, ready, go = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), Path(sys.argv[3])
cfg = load_profile("smoke", args["overrides"])
final, tasks = Record.from_dict(args["final"]), [Record.from_dict(d) for d in args["id_tasks"]]
with tracking.pipeline_run("register-race", f"p{os.getpid()}", {}) as parent:
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    out = register_model(cfg, parent, "lora_mtl", 0, final, tasks)
print(json.dumps(out))
"""


def _trained(tmp_path: Path) -> dict:
    """A lora_mtl model's weights (untrained: only their digest matters) and the records register_model reads."""
    from safetensors.torch import save_file

    from cdco_core.cache import Record
    from cdco_core.io import sha256_file
    from cdco_core.methods import get_method
    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_plan
    from cdco_core.steps.train import id_tasks

    cfg = load_profile("smoke", OVERRIDES)
    plan = build_plan(cfg, ["lora_mtl"], [0])
    prepared = run_plan(plan, [n.id for n in plan.of_step("prepare")])
    records = [prepared[n.id] for n in plan.of_step("prepare") if prepared[n.id].outputs["kind"] == "ID"]
    model, _ = get_method("lora_mtl", cfg).build_model(cfg, id_tasks(prepared, None, "ID"))
    (tmp_path / "final").mkdir()
    save_file(model.trainable_state_dict(), str(tmp_path / "final" / "weights.safetensors"))
    sha = sha256_file(tmp_path / "final" / "weights.safetensors")
    final = Record("train", "lora_mtl/seed0", "race", str(tmp_path / "final"), {"weights_sha256": sha})
    return {"overrides": OVERRIDES, "final": final.as_dict(), "id_tasks": [r.as_dict() for r in records]}


def test_two_runs_registering_the_same_weights_at_once_make_one_version(tmp_path, cdco_home):
    import mlflow

    args = _trained(tmp_path)
    (tmp_path / "args.json").write_text(json.dumps(args))
    env = {**os.environ, "CDCO_HOME": str(cdco_home), "MLFLOW_TRACKING_URI": f"sqlite:///{cdco_home}/mlflow.db",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", REGISTER, str(tmp_path / "args.json"), str(tmp_path / f"ready{i}"),
                               str(go)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    for i, p in enumerate(procs):
        wait_for_file(tmp_path / f"ready{i}", p, 300, "a registering process never reached the barrier")
    go.touch()
    outs = []
    for p in procs:
        out = p.communicate(timeout=300)[0].decode()  # a hang guard, not a speed target
        assert p.returncode == 0, out[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))

    sha = args["final"]["outputs"]["weights_sha256"]
    mlflow.set_tracking_uri(f"sqlite:///{cdco_home}/mlflow.db")
    versions = mlflow.MlflowClient().search_model_versions("name = 'cdco-smoke'")
    assert [v.tags.get("cdco.weights_sha256") for v in versions] == [sha]  # one version, of these weights
    assert sorted(o["reused"] for o in outs) == [False, True]  # one registered, the other found it
    assert {o["version"] for o in outs} == {str(versions[0].version)} and {o["weights_sha256"] for o in outs} == {sha}
