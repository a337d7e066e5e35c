"""The registered pyfunc model refuses weights whose sha256 differs from the one recorded when it was logged."""

from __future__ import annotations

import pytest


@pytest.fixture
def registered(tmp_path, cdco_home):
    """A lora_mtl model (untrained weights: only integrity is under test) logged and registered as tasks/ does
    (a stage's LoggedModel in the pyfunc format, registered from its ``models:/<model_id>``)."""
    import mlflow
    from safetensors.torch import save_file

    from cdco_core.io import sha256_file
    from cdco_core.methods import get_method
    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_plan
    from cdco_core.steps.train import id_tasks
    from tasks import tracking
    from tasks.register import PYFUNC_CODE, pyfunc_args

    cfg = load_profile("smoke", ["orchestration.experiment=pyfunc-test"])
    plan = build_plan(cfg, ["lora_mtl"], [0])
    prepared = run_plan(plan, [n.id for n in plan.of_step("prepare")])
    records = [prepared[n.id] for n in plan.of_step("prepare") if prepared[n.id].outputs["kind"] == "ID"]
    model, _ = get_method("lora_mtl", cfg).build_model(cfg, id_tasks(prepared, None, "ID"))
    weights = tmp_path / "weights.safetensors"
    save_file(model.trainable_state_dict(), str(weights))
    sha = sha256_file(weights)
    with tracking.pipeline_run("pyfunc-test", "parent", {}) as parent, tracking.step_run(parent, "stage"):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(PYFUNC_CODE),
                                       **pyfunc_args(cfg, "lora_mtl", 0, weights, records, tmp_path))
        version = mlflow.register_model(f"models:/{info.model_id}", "cdco-pyfunc-test").version
    [logged] = [p for p in (cdco_home / "mlartifacts").rglob("weights.safetensors")]
    return f"models:/cdco-pyfunc-test/{version}", logged, sha


def test_intact_weights_load_and_flipped_bytes_are_refused(registered):
    import mlflow

    uri, logged, sha = registered
    mlflow.pyfunc.load_model(uri)  # intact: loads
    data = bytearray(logged.read_bytes())
    data[-10] ^= 0xFF
    logged.write_bytes(bytes(data))
    with pytest.raises(Exception, match=rf"weights\.safetensors has sha256 [0-9a-f]{{12}}.*, the model was registered "
                                        rf"with {sha[:12]}"):
        mlflow.pyfunc.load_model(uri)


def test_weights_check_function():
    from tasks.pyfunc_model import WeightsMismatchError, verify_weights

    with pytest.raises(WeightsMismatchError, match="no weights sha256 recorded"):
        verify_weights(__file__, None)
