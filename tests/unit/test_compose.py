"""docker-compose.yml, Dockerfile and prefect.yaml: structure and consistency with the code.

There is no Docker engine here, so the stack is never started in tests; these checks parse the files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_services_and_health(compose) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "prefect-server", "mlflow", "worker"}
    for name in ("postgres", "prefect-server", "mlflow"):
        assert services[name]["healthcheck"]["test"], name
    assert services["worker"]["depends_on"] == {"prefect-server": {"condition": "service_healthy"},
                                                "mlflow": {"condition": "service_healthy"}}
    for name in ("prefect-server", "mlflow"):
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["worker"]["build"] == "." and (ROOT / "Dockerfile").exists()


def test_published_ports_bind_loopback_by_default(compose) -> None:
    published = [(n, p) for n, s in compose["services"].items() for p in s.get("ports", [])]
    assert {n for n, _ in published} == {"prefect-server", "mlflow"}  # Postgres stays inside the network
    for _, port in published:
        assert port.startswith("${CDCO_BIND:-127.0.0.1}:"), port
    ports = dict(published)
    assert ports["prefect-server"].endswith(":${CDCO_PREFECT_PORT:-4200}:4200")
    assert ports["mlflow"].endswith(":${CDCO_MLFLOW_PORT:-5000}:5000")


def test_databases_match_the_connection_urls(compose) -> None:
    init = compose["configs"]["postgres-init"]["content"]
    created = set(re.findall(r"CREATE DATABASE (\w+);", init))
    prefect_url = _env(compose["services"]["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    mlflow_cmd = compose["services"]["mlflow"]["command"]
    mlflow_url = _flag(mlflow_cmd, "--backend-store-uri")
    assert prefect_url.startswith("postgresql+asyncpg://") and prefect_url.endswith("@postgres:5432/prefect")
    assert mlflow_url.startswith("postgresql://") and mlflow_url.endswith("@postgres:5432/mlflow")
    assert created == {"prefect", "mlflow"}
    assert "/docker-entrypoint-initdb.d/" in compose["services"]["postgres"]["configs"][0]["target"]


def test_worker_environment_points_at_the_services(compose) -> None:
    s = compose["services"]
    env = _env(s["worker"])
    prefect_port = _flag(s["prefect-server"]["command"], "--port")
    mlflow_port = _flag(s["mlflow"]["command"], "--port")
    assert env["PREFECT_API_URL"] == f"http://prefect-server:{prefect_port}/api"
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"
    assert f"mlflow:{mlflow_port}" in _flag(s["mlflow"]["command"], "--allowed-hosts").split(",")
    assert "--serve-artifacts" in s["mlflow"]["command"] and _flag(s["mlflow"]["command"], "--workers") == "1"
    cmd = " ".join(s["worker"]["command"])
    pool = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pool"]["name"]
    assert f"python -m flows.deployments register --profile $${{CDCO_PROFILE}} --work-pool {pool}" in cmd
    assert f"prefect worker start --pool {pool} --type process" in cmd
    assert env["CDCO_HOME"] in [v.split(":")[1] for v in s["worker"]["volumes"]]


def test_prefect_yaml_matches_the_code() -> None:
    import importlib

    from flows import deployments
    from flows.sensor import EVENT

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {deployments.DEPLOYMENT, deployments.SENSOR_DEPLOYMENT}
    flow_names = {}
    for name, d in deps.items():
        path, attr = d["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
        flow_names[name] = flow.name
        assert set(d["parameters"]) == {"profile", "overrides"}
        assert d["work_pool"]["name"] == "cdco-process"
    assert flow_names == {"full-pipeline": "cdco", "dataset-sensor": "cdco-dataset-sensor"}
    [trigger] = deps["full-pipeline"]["triggers"]
    code = deployments.dataset_trigger("demo", "demo", [])
    assert set(trigger["expect"]) == code.expect == {EVENT}
    # the code's ResourceSpecification holds each label's values as a list
    assert {k: [v] for k, v in trigger["match"].items()} == {k: list(v) for k, v in code.match.items()}


def test_dockerfile_installs_cpu_torch_and_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert 'download.pytorch.org/whl/cpu "torch==2.13.0"' in text
    assert "pip install -e ." in text and "psycopg2" in text  # MLflow's Postgres store needs the driver
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv/", ".cdco/", ".git/"} <= set(ignored)
