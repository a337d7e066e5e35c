"""docker-compose.yml, Dockerfile and prefect.yaml: structure and consistency with the code.

There is no Docker engine here, so the stack is never started in tests; these checks parse the files.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from cli import team

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
    assert set(services) == {"postgres", "prefect-server", "mlflow", "dask-scheduler", "dask-worker", "worker"}
    for name in ("postgres", "prefect-server", "mlflow", "dask-scheduler"):
        assert services[name]["healthcheck"]["test"], name
    assert services["worker"]["depends_on"] == {"prefect-server": {"condition": "service_healthy"},
                                                "mlflow": {"condition": "service_healthy"},
                                                "dask-scheduler": {"condition": "service_healthy"}}
    assert services["dask-worker"]["depends_on"] == {"dask-scheduler": {"condition": "service_healthy"}}
    assert services["dask-worker"]["deploy"]["replicas"] == 2  # as the native stack's --dask-workers default
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
    assert created == {"prefect", "mlflow", "optuna"}
    for service in ("worker", "dask-worker"):  # cdco tune's studies, shared by the team
        assert _env(compose["services"][service])["CDCO_OPTUNA_STORAGE"].endswith("@postgres:5432/optuna")
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
    assert f"prefect worker start --pool {pool} --type process --limit 1" in cmd
    assert env["CDCO_HOME"] in [v.split(":")[1] for v in s["worker"]["volumes"]]


def test_prefect_yaml_matches_the_code() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from flows import deployments
    from flows.sensor import EVENT

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {deployments.DEPLOYMENT, deployments.SENSOR_DEPLOYMENT}
    flow_names = {}
    for name, d in deps.items():
        # a module path, as flows.deployments registers (a file path would load the flow as a stray module that
        # an external Dask scheduler cannot import); `prefect deploy` loads it with this same function
        assert ".py" not in d["entrypoint"] and ":" not in d["entrypoint"]
        flow_names[name] = load_flow_from_entrypoint(d["entrypoint"]).name
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
    assert "pip install -e ." in text
    # the Postgres drivers come with the project: psycopg2 (MLflow's store), asyncpg (the Prefect server)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert {d.split(">")[0] for d in deps} >= {"psycopg2-binary", "asyncpg"}
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv/", ".cdco/", ".git/"} <= set(ignored)


def _native_table(compose: dict) -> dict:
    """The native launcher's table (cli/team.py) rendered with the compose file's hosts, ports and paths."""
    from cli import team

    mlflow_cmd = compose["services"]["mlflow"]["command"]
    return team.service_commands(
        host="0.0.0.0", ports={"prefect": 4200, "mlflow": 5000, "dask": 8786},
        db_server="postgresql://cdco:${CDCO_DB_PASSWORD:-cdco}@postgres:5432", artifacts="/mlartifacts",
        api_host="compose", profile="$${CDCO_PROFILE}", home="/data/cdco",
        mlflow_allowed_hosts=_flag(mlflow_cmd, "--allowed-hosts"),  # who may call differs: compose adds "mlflow"
        dask_address="tcp://dask-scheduler:8786")


def test_compose_services_run_the_native_launchers_commands(compose) -> None:
    """Same commands and environment as `make serve STACK=team`, host names and ports aside."""
    s, native = compose["services"], _native_table(compose)
    for service in ("prefect-server", "mlflow", "dask-scheduler", "dask-worker"):
        argv, env = native[service]
        assert s[service]["command"] == argv, service
        got = {k: v.replace("${CDCO_PREFECT_PORT:-4200}", "4200") for k, v in _env(s[service]).items()}
        assert got == env, service
    register, register_env = native["register"]
    worker, worker_env = native["worker"]
    assert s["worker"]["command"][:2] == ["sh", "-c"]
    assert " ".join(s["worker"]["command"][2].split()) == f"{' '.join(register)} && exec {' '.join(worker)}"
    env = _env(s["worker"])
    assert env.pop("CDCO_PROFILE") == "${CDCO_PROFILE:-demo}" and worker_env.pop("CDCO_PROFILE")
    assert env == worker_env
    assert register_env.items() <= {**env, "PREFECT_API_URL": env["PREFECT_API_URL"]}.items()  # same container
    init = compose["configs"]["postgres-init"]["content"]
    assert set(team.DATABASES) == set(re.findall(r"CREATE DATABASE (\w+);", init))
    assert compose["x-db"]["POSTGRES_USER"] == team.DB_USER


def test_native_launcher_runs_the_console_scripts_as_modules() -> None:
    import sys

    assert team.native_argv(["prefect", "worker", "start"]) == [sys.executable, "-m", "prefect", "worker", "start"]
    assert team.native_argv(["python", "-m", "flows.deployments"]) == [sys.executable, "-m", "flows.deployments"]
