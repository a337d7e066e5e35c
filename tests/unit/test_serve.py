"""make serve / make stop plumbing (cli/serve.py): ports, commands, and stopping exactly our PIDs.
The real servers are started in tests/integration."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cli import serve

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_ports_from_env(monkeypatch) -> None:
    monkeypatch.delenv("CDCO_PREFECT_PORT", raising=False)
    monkeypatch.setenv("CDCO_MLFLOW_PORT", "5055")
    assert serve.ports() == {"prefect": 4200, "mlflow": 5055}
    monkeypatch.setenv("CDCO_PREFECT_PORT", "http")
    with pytest.raises(serve.ServeError, match=r"CDCO_PREFECT_PORT='http' is not a port number"):
        serve.ports()


def test_commands_bind_loopback_and_keep_state_under_home(tmp_path) -> None:
    cmds = serve.commands(tmp_path, 4321, 5321, "smoke", ["train.batch_size=4"])
    prefect, penv = cmds["prefect"]
    assert prefect[prefect.index("--host") + 1] == "127.0.0.1" and prefect[prefect.index("--port") + 1] == "4321"
    assert penv["PREFECT_HOME"] == str(tmp_path / "prefect")
    mlflow, _ = cmds["mlflow"]
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1"
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert mlflow[mlflow.index("--workers") + 1] == "1"
    dep, denv = cmds["deployment"]
    assert dep[-4:] == ["--profile", "smoke", "--set", "train.batch_size=4"]
    assert denv["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert denv["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5321" and denv["CDCO_HOME"] == str(tmp_path)


def test_stop_ends_our_process_group_and_spares_a_reused_pid(tmp_path) -> None:
    rec = serve.launch("deployment", SLEEPER, {}, tmp_path, None)
    assert serve.running(rec) and serve.status(tmp_path)["deployment"]["running"]
    # a pid file whose pid now runs something else (pid reuse) must not be signalled
    stranger = subprocess.Popen(SLEEPER)
    try:
        (serve.state_dir(tmp_path) / "mlflow.pid").write_text(
            f'{{"name": "mlflow", "pid": {stranger.pid}, "argv": ["mlflow", "server"], "port": 1}}')
        assert serve.stop(tmp_path) == {"deployment": "stopped", "mlflow": "not running"}
        assert stranger.poll() is None  # still alive
        assert not serve.running(rec) and serve.read_records(tmp_path) == {}
    finally:
        stranger.kill()
        stranger.wait()


def test_start_refuses_a_busy_port_before_starting_anything(tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(serve.ServeError, match=f"port 127.0.0.1:{busy} is in use; .*CDCO_PREFECT_PORT"):
            serve.start("smoke", home=tmp_path, prefect_port=busy, mlflow_port=busy)
    assert serve.read_records(tmp_path) == {}


def test_start_refuses_when_already_running(tmp_path) -> None:
    rec = serve.launch("prefect", SLEEPER, {}, tmp_path, 1)
    try:
        with pytest.raises(serve.ServeError, match="already running .*prefect; `make stop` first"):
            serve.start("smoke", home=tmp_path)
    finally:
        serve.stop(tmp_path)
    deadline = time.monotonic() + 5
    while serve.running(rec) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not serve.running(rec)


def test_stop_also_ends_children_that_left_the_group_and_runs_backwards(tmp_path) -> None:
    """A Prefect process worker starts each flow run in a session of its own: stop must end those too."""
    marker = tmp_path / "child.pid"
    spawner = [sys.executable, "-c",
               "import subprocess, sys, time; "
               "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
               f"open({str(marker)!r}, 'w').write(str(c.pid)); time.sleep(120)"]
    scratch = tmp_path / "cluster"
    scratch.mkdir()
    first = serve.launch("postgres", SLEEPER, {}, tmp_path, None, extra={"remove_after_stop": str(scratch)})
    worker = serve.launch("cdco-worker-1", spawner, {}, tmp_path, None)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(marker.read_text())
    assert serve._pgid(child) == child != worker["pid"]
    assert list(serve.stop(tmp_path)) == ["cdco-worker-1", "postgres"]  # reverse start order
    deadline = time.monotonic() + 10
    while serve._stat(child) not in (None,) and serve._stat(child)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert serve._stat(child) is None or serve._stat(child)[0] == "Z"
    assert not serve.running(first) and not scratch.exists()


def test_a_port_left_in_time_wait_is_free_again_at_once() -> None:
    """``make stop && make serve``: the stopped server's connections linger in TIME_WAIT; binding with
    SO_REUSEADDR (as the servers do) succeeds, so start must not call the port busy."""
    import socket

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection enters TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    with socket.socket() as plain:  # the check before the fix: a bind without SO_REUSEADDR fails
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    assert serve.port_free(port)
    with socket.socket() as listening:  # a server started now binds as the real ones do
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", port))
        listening.listen()
        assert not serve.port_free(port)  # a live server still counts as busy
