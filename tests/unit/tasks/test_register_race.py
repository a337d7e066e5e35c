"""Two runs that finish at once register the same weights once (issue 17: versions 1 and 2 for one sha256), and
set its aliases under the same lock.

Two processes, released together from a barrier, call ``tasks.register.find_or_register`` (what
``register_models`` does for each version) with the same weights against one real MLflow SQLite store. Without
the find-or-register lock both find no version and both register (measured: versions 1 and 2); with it one
registers and the other reuses that version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_for_file

ROOT = Path(__file__).resolve().parents[3]

# Everything slow (imports, the parent run, the model to register) happens before the barrier, so the two
# find-or-register calls overlap. Each process logs its own LoggedModel of the same weights (as two pipeline runs
# that trained identical stages would) and registers it under the weights' sha256.
REGISTER = """
import json, sys, time
from pathlib import Path
import mlflow
from tasks import tracking
from tasks.register import find_or_register
sha, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
with tracking.pipeline_run("register-race", "race", {}):
    model = mlflow.initialize_logged_model(name="lora_mtl-seed0")
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    version, reused = find_or_register("cdco-smoke", sha, f"models:/{model.model_id}", {}, "race",
                                       aliases=["latest_run", "champion"])
print(json.dumps({"version": version, "reused": reused, "weights_sha256": sha}))
"""


def test_two_runs_registering_the_same_weights_at_once_make_one_version(tmp_path, cdco_home):
    import mlflow

    sha = "ab" * 32  # only the digest matters to find-or-register
    env = {**os.environ, "CDCO_HOME": str(cdco_home), "MLFLOW_TRACKING_URI": f"sqlite:///{cdco_home}/mlflow.db",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", REGISTER, sha, str(tmp_path / f"ready{i}"), str(go)],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    for i, p in enumerate(procs):
        wait_for_file(tmp_path / f"ready{i}", p, 300, "a registering process never reached the barrier")
    go.touch()
    outs = []
    for p in procs:
        out = p.communicate(timeout=300)[0].decode()  # a hang guard, not a speed target
        assert p.returncode == 0, out[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))

    mlflow.set_tracking_uri(f"sqlite:///{cdco_home}/mlflow.db")
    versions = mlflow.MlflowClient().search_model_versions("name = 'cdco-smoke'")
    assert [v.tags.get("cdco.weights_sha256") for v in versions] == [sha]  # one version, of these weights
    assert sorted(o["reused"] for o in outs) == [False, True]  # one registered, the other found it
    assert {o["version"] for o in outs} == {str(versions[0].version)} and {o["weights_sha256"] for o in outs} == {sha}
    # both aliases, set by both processes, point at that version
    for alias in ("latest_run", "champion"):
        assert mlflow.MlflowClient().get_model_version_by_alias("cdco-smoke", alias).version == versions[0].version
