"""The team stack, for real (cli/team.py): PostgreSQL started as its own process, the Prefect server and MLflow
server on it, a Dask scheduler with two ``dask worker`` processes, the deployments in the ``cdco-process`` work pool
and two ``prefect worker`` processes. One stack per test session (``team_stack``), stopped by PID at the end.

Two runs of the session's test profile submitted at once are executed by the two workers, fan out on the external
Dask cluster, and land in the one MLflow store; a database that does not answer and wrong credentials stop
``serve start`` with one message and exit code 2.

The workers share ``CDCO_HOME`` with the session's local stack (conftest.py), as a team's workers share a volume:
after test_pipeline.py the steps are cache hits, and what is under test here is who runs them, not the training.
Run alone, this file computes everything (minutes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port

PROJECT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

@pytest.fixture(scope="session")
def team_stack(tmp_path_factory, stack) -> Iterator[dict[str, Any]]:
    """{"home" (CDCO_HOME, the local stack's), "state", "profile", "urls", "pids", "server"} of a running team stack
    on free loopback ports."""
    from cli import serve, team

    state = tmp_path_factory.mktemp("team") / "home"
    ports = {name: free_port() for name in ("postgres", "prefect", "mlflow", "dask")}
    t0 = time.monotonic()
    info = team.start_team(stack["profile"], home=state, data_home=stack["home"], ports=ports, workers=2,
                           dask_workers=2, timeout=420)
    print(f"team stack up in {time.monotonic() - t0:.0f} s")
    try:
        yield {**info, "home": stack["home"], "state": state, "profile": stack["profile"], "ports": ports,
               "server": team.server_url("127.0.0.1", ports["postgres"])}
    finally:
        serve.stop(state)


@pytest.fixture
def on_team(team_stack, monkeypatch, tmp_path) -> Iterator[dict[str, Any]]:
    from tests.helpers import stack_settings

    with stack_settings(team_stack, monkeypatch, tmp_path / "prefect-client") as s:
        yield s


def _submitted_by(state_dir: Path) -> dict[str, str]:
    """{flow run id: worker name} from the workers' logs ("Worker 'cdco-worker-1' submitting flow run '<id>'").

    Two idle workers may both try to submit one run; the server lets one through and the other logs "Aborted
    submission of flow run '<id>'": that attempt does not count.
    """
    out = {}
    for log in sorted(state_dir.glob("cdco-worker-*.log")):
        text = log.read_text(encoding="utf-8", errors="replace")
        aborted = set(re.findall(r"Aborted submission of flow run '([0-9a-f-]+)'", text))
        for name, run_id in re.findall(r"Worker '([\w-]+)' submitting flow run '([0-9a-f-]+)'", text):
            if run_id not in aborted:
                out[run_id] = name
    return out


def test_stack_runs_on_postgres_as_separate_processes(on_team) -> None:
    import datetime

    import psycopg2
    from prefect import get_client
    from prefect.automations import Automation

    from cdco_core.paths import PROJECT_ROOT
    from cli import serve
    from flows.deployments import CRASH_AUTOMATION

    team_stack = on_team
    with get_client(sync_client=True) as pc:  # workers run the flows in the project folder, not a copy
        deployment = pc.read_deployment_by_name("cdco/full-pipeline")
    assert deployment.work_pool_name == "cdco-process"
    assert deployment.entrypoint == "flows.full_pipeline.cdco"  # importable by the Dask scheduler and workers
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                                      {"directory": str(PROJECT_ROOT)}}]
    # runs whose worker died are marked Crashed after 3 missed 30 s heartbeats
    assert Automation.read(name=CRASH_AUTOMATION).trigger.within == datetime.timedelta(seconds=90)

    records = serve.read_records(team_stack["state"])
    assert list(records) == ["postgres", "prefect-server", "mlflow", "dask-scheduler", "dask-worker-1",
                             "dask-worker-2", "cdco-worker-1", "cdco-worker-2"]
    assert all(serve.running(r) for r in records.values())
    assert len({r["pid"] for r in records.values()}) == len(records)
    conn = psycopg2.connect(team_stack["server"] + "/prefect", connect_timeout=10)
    try:
        with conn.cursor() as cur:  # both services keep their state in PostgreSQL
            cur.execute("SELECT count(*) FROM work_pool WHERE name = 'cdco-process'")
            assert cur.fetchone() == (1,)
            cur.execute("SELECT datname FROM pg_database")
            assert {"prefect", "mlflow"} <= {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def test_two_runs_at_once_two_workers_dask_and_one_mlflow_store(on_team) -> None:
    import mlflow
    from distributed import Client, get_task_stream
    from prefect import get_client
    from prefect.deployments import run_deployment

    address = on_team["urls"]["dask"]
    overrides = ["orchestration.task_runner=dask", f"orchestration.dask_address={address}",
                 "orchestration.experiment=cdco-team"]
    t0 = time.monotonic()
    with Client(address, timeout=60) as dask, get_task_stream(dask) as stream:
        workers = dask.scheduler_info(n_workers=-1)["workers"]
        params = {"profile": on_team["profile"], "overrides": overrides}
        submitted = [run_deployment("cdco/full-pipeline", parameters=params, timeout=0) for _ in range(2)]
        with get_client(sync_client=True) as pc:
            deadline = time.monotonic() + 1200  # a hang guard, not a speed target
            while True:
                runs = [pc.read_flow_run(r.id) for r in submitted]
                if all(r.state.is_final() for r in runs) or time.monotonic() > deadline:
                    break
                time.sleep(2)
    print(f"two flow runs on the team stack: {time.monotonic() - t0:.0f} s")
    if any(r.state.type.value != "COMPLETED" for r in runs):  # the traceback, shown with the failure
        for log in sorted(Path(on_team["state_dir"]).glob("cdco-worker-*.log")):
            print(f"--- {log.name}\n{log.read_text(encoding='utf-8', errors='replace')[-8000:]}")
        pg = Path(on_team["state_dir"]) / "postgres.log"  # a unique key two writers raced on, by its name
        if pg.exists():
            print("--- postgres.log errors\n" + "\n".join(
                line for line in pg.read_text(encoding="utf-8", errors="replace").splitlines()
                if "ERROR" in line or "DETAIL" in line))
    assert [r.state.type.value for r in runs] == ["COMPLETED", "COMPLETED"], [r.state.message for r in runs]

    by = _submitted_by(Path(on_team["state_dir"]))
    assert sorted(by[str(r.id)] for r in runs) == ["cdco-worker-1", "cdco-worker-2"]  # one run each

    # every plan node (embeddings, stages, evaluations: one Prefect task `run_step` each) ran in the dask worker
    # processes (names, not the flow's process), on both of them
    names = {addr: w["name"] for addr, w in workers.items()}
    ran = [(t["key"], names.get(t["worker"])) for t in stream.data]
    steps = [w for k, w in ran if "run_step" in str(k)]
    print("dask tasks per worker:", {n: sum(1 for _, w in ran if w == n) for n in names.values()})
    assert steps, ran
    assert set(steps) == {"dask-worker-1", "dask-worker-2"}

    mlflow.set_tracking_uri(on_team["urls"]["mlflow"])
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("cdco-team")
    parents = {r.data.tags["prefect.flow_run_id"]: r for r in client.search_runs(
        [exp.experiment_id], "tags.`prefect.flow_run_id` != ''")}
    assert {str(r.id) for r in runs} <= set(parents)
    for r in runs:  # each run's own children, its artifacts uploaded through the server
        parent = parents[str(r.id)]
        assert parent.info.status == "FINISHED"
        assert client.download_artifacts(parent.info.run_id, "config/resolved.yaml").endswith("resolved.yaml")
    assert not (Path(on_team["home"]) / "mlruns").exists()
    assert list((Path(on_team["state"]) / "mlartifacts").iterdir())  # the server's artifact root


@pytest.mark.parametrize("case", ["no-answer", "wrong-password"])
def test_bad_database_url_one_message_exit_2(team_stack, case, capsys, tmp_path, monkeypatch) -> None:
    from cli import serve

    monkeypatch.setenv("CDCO_HOME", str(tmp_path / "home"))
    if case == "no-answer":
        url, expect = f"postgresql://cdco:cdco@127.0.0.1:{free_port()}", r"does not answer"
    else:
        url, expect = f"postgresql://cdco:wrong-pw@127.0.0.1:{team_stack['ports']['postgres']}", r"refused user 'cdco'"
    assert serve.main(["start", "--stack", "team", "--profile", "smoke", "--db-url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert re.match(rf"^error: the PostgreSQL server at 127\.0\.0\.1:\d+ {expect}", err), err
    assert "wrong-pw" not in err and len(err.splitlines()) == 1
    assert not list((tmp_path / "home").glob("serve/*.pid"))  # nothing was started


def _first_attempt_hangs(marker_dir: str) -> int:
    """Record this worker process's pid; the first attempt then hangs (the test kills its worker), a retry returns."""
    import os  # runs on a Dask worker: self-contained

    folder = Path(marker_dir)
    first = not any(folder.iterdir())
    (folder / str(os.getpid())).write_text("started", encoding="utf-8")
    if first:
        time.sleep(300)
    return os.getpid()


def test_dask_worker_killed_mid_task_is_retried_on_another(team_stack, tmp_path) -> None:
    import signal

    from distributed import Client

    with Client(team_stack["urls"]["dask"], timeout=60) as dask:
        future = dask.submit(_first_attempt_hangs, str(tmp_path), pure=False)
        deadline = time.monotonic() + 120  # a hang guard, not a speed target
        while not any(tmp_path.iterdir()):
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.2)
        [victim] = [int(p.name) for p in tmp_path.iterdir()]
        os.kill(victim, signal.SIGKILL)  # the worker process running the task (its nanny restarts it)
        survivor = future.result(timeout=180)
        assert survivor != victim and len(list(tmp_path.iterdir())) == 2
        # the cluster is whole again: the nanny restarted the killed worker process
        deadline = time.monotonic() + 120
        while len(dask.scheduler_info(n_workers=-1)["workers"]) < 2:
            assert time.monotonic() < deadline, "the killed dask worker was not restarted"
            time.sleep(0.5)


def test_two_tune_workers_fill_one_study_on_the_team_database(team_stack, tmp_path) -> None:
    # issue 16: `cdco tune` studies live in the team's PostgreSQL (database "optuna", CDCO_OPTUNA_STORAGE as the
    # stack's workers get it), so several workers fill one study between them
    import optuna
    from optuna.trial import TrialState

    from cli import team

    storage = team.database_url(team_stack["server"], "optuna")
    env = {**os.environ, "CDCO_OPTUNA_STORAGE": storage, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1",
           "CDCO_HOME": str(tmp_path / "home")}
    go = tmp_path / "go"
    script = Path(__file__).with_name("team_tune_script.py")
    procs = [subprocess.Popen([sys.executable, str(script), str(go), "6"], env=env, cwd=PROJECT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    time.sleep(3)  # both import and wait
    go.write_text("go")
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out[-2000:]
    study = optuna.load_study(study_name="smoke/lora_mtl", storage=storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert 6 <= len(complete) <= 7  # two asks at the same instant may overshoot by one (documented)
    assert {t.user_attrs["pid"] for t in complete} == {p.pid for p in procs}  # both workers ran trials
    proposals = [tuple(t.user_attrs["overrides"]) for t in complete]
    assert len(set(proposals)) == len(proposals)  # workers asking at once proposed different settings


def _heartbeats(api_url: str, flow_run_id: Any) -> int:
    """How many ``prefect.flow-run.heartbeat`` events of the flow run the server has stored."""
    import httpx

    body = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                       "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 1}
    reply = httpx.post(f"{api_url}/events/filter", json=body, timeout=30)
    reply.raise_for_status()
    return int(reply.json()["total"])


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_final(pc: Any, flow_run_id: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds  # a hang guard, not a speed target
    while not (run := pc.read_flow_run(flow_run_id)).state.is_final():
        assert time.monotonic() < deadline, f"{what}: flow run {flow_run_id} still {run.state.name} after {seconds} s"
        time.sleep(2)
    return run


def test_worker_killed_mid_run_is_crashed_and_a_rerun_resumes_from_the_checkpoint(on_team) -> None:
    # issue 16: a Prefect worker lost mid-run (kill -9 of its process group: the worker and the flow-run process it
    # started) leaves the run Running with no heartbeats; the automation `register` installs marks it Crashed, and
    # running the deployment again, as the README tells users, resumes the interrupted stage from its checkpoint
    import datetime
    import json
    import signal

    import psutil
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    from cli import serve, team

    stack = on_team
    state, home = Path(stack["state"]).resolve(), Path(stack["home"])  # stack state; the workers' CDCO_HOME
    train_dir = home / "steps" / "train"
    # keys nobody computed (a longer first stage, checkpointed every 5 steps), so the stage trains rather than
    # hitting the cache; the thread runner trains in the flow-run process, which a machine loss takes down with its
    # worker. 300 steps: seconds of training alone, minutes on a loaded machine; the test waits for the first
    # checkpoint, so the step it dies at does not matter
    steps = 300
    overrides = ["orchestration.task_runner=thread", "orchestration.experiment=cdco-team-crash",
                 f"train.stages.0.steps={steps}", "train.checkpoint_every=5"]
    params = {"profile": stack["profile"], "overrides": overrides}
    before = set(train_dir.glob("*.partial"))
    api = stack["urls"]["prefect_api"]
    t0 = time.monotonic()
    first = run_deployment("cdco/full-pipeline", parameters=params, timeout=0)
    with get_client(sync_client=True) as pc:
        deadline = time.monotonic() + 400  # a hang guard, not a speed target
        beat = False
        while True:
            run = pc.read_flow_run(first.id)
            assert not run.state.is_final(), f"the run ended before a stage checkpoint appeared: {run.state}"
            # the automation watches runs that sent a heartbeat: the server must hold one before the machine dies
            beat = beat or _heartbeats(api, first.id) > 0
            started = [p for p in train_dir.glob("*.partial") if p not in before and any(p.glob("ckpt-*"))]
            if started and beat:
                break
            assert time.monotonic() < deadline, f"no stage checkpoint under {train_dir} within 400 s ({run.state})"
            time.sleep(0.2)
        [partial] = started
        name = _submitted_by(Path(stack["state_dir"]))[str(first.id)]
        worker = serve.read_records(state)[name]
        victims = [worker["pid"], *(c.pid for c in psutil.Process(worker["pid"]).children(recursive=True))]
        flow_pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
        assert flow_pid in victims, (run.infrastructure_pid, victims)  # the worker started the flow's process
        os.killpg(worker["pid"], signal.SIGKILL)  # the worker leads its session (serve.launch): the whole group
        for pid in victims:  # anything that left the group dies with the machine too
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed = time.monotonic()
        gone = time.monotonic() + 30  # SIGKILL is delivered, not awaited
        while [p for p in victims if _alive(p)]:
            serve._reap(worker["pid"])  # the worker is this process's child (serve.launch)
            assert time.monotonic() < gone, f"still alive after SIGKILL: {[p for p in victims if _alive(p)]}"
            time.sleep(0.1)
        ckpts = sorted(partial.glob("ckpt-*"))  # what the re-run will find: the newest complete checkpoint
        assert ckpts, f"no checkpoint left in {partial}"
        resume_at = int(ckpts[-1].name.removeprefix("ckpt-"))
        assert 0 < resume_at < steps
        print(f"killed {name} (pid {worker['pid']}) and its flow run at stage step {resume_at}, "
              f"{killed - t0:.0f} s after submitting")

        # start the worker again as the stack does, while the server notices the silence
        restarted = datetime.datetime.now(datetime.UTC)
        team.start_worker(name, team.native_commands(state, stack["ports"], stack["server"], stack["profile"], home),
                          state)
        crashed = _wait_final(pc, first.id, 300, "no heartbeat for 90 s")
        print(f"flow run Crashed {time.monotonic() - killed:.0f} s after the kill")
        assert crashed.state.type == StateType.CRASHED, crashed.state
        assert "no heartbeat" in (crashed.state.message or ""), crashed.state.message
        assert partial.exists()  # nothing cleaned the interrupted stage's resume state

        deadline = time.monotonic() + 180
        while not any(w.name == name and w.last_heartbeat_time and w.last_heartbeat_time > restarted
                      for w in pc.read_workers_for_work_pool(team.POOL)):
            assert time.monotonic() < deadline, f"the restarted {name} never sent a heartbeat; see {worker['log']}"
            time.sleep(1)

        t1 = time.monotonic()
        second = run_deployment("cdco/full-pipeline", parameters=params, timeout=0)  # the same run again
        done = _wait_final(pc, second.id, 400, "the re-run")
    print(f"re-run after the crash: {time.monotonic() - t1:.0f} s")
    assert done.state.type == StateType.COMPLETED, done.state
    stage = partial.with_name(partial.name.removesuffix(".partial"))
    timings = json.loads((stage / "timings.json").read_text(encoding="utf-8"))
    assert timings["resumed_from"] == resume_at  # resumed from the checkpoint, not from step 0
    assert timings["timed_steps_total"] == steps - resume_at  # the re-run trained only the steps after it
    assert json.loads((stage / "meta.json").read_text(encoding="utf-8"))["train"]["steps"] == steps
    assert not partial.exists()  # published: the resume state is gone
    # the team is whole again for whatever runs next: both workers alive
    records = serve.read_records(state)
    assert all(serve.running(records[f"cdco-worker-{i}"]) for i in (1, 2))
