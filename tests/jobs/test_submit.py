"""A real cluster submission: a `ray start` head on this machine, `ray job submit --working-dir <repo>`, jobs.label.

The head is a separate Ray instance in its own temp dir and session. It is stopped by killing exactly its own
processes, never with `ray stop`: that command terminates every Ray process of the machine, including the
embedded instances of tests running next to this one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from segcore.io.commit import Output, committed_shards
from segcore.runtime.reduce import reduce_output
from segcore.synthetic import write_demo_shards

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the job runs with the head's python: start the head with this venv's ray
RAY = VENV_BIN / "ray"
MAX_PACKAGE_BYTES = 16 * 1024 * 1024  # the code is ~4 MiB; bench/corpus alone is ~90 MiB, .venv gigabytes
NEVER_UPLOADED = (".git", ".venv", "out", "bench/corpus", "bench/out", ".pytest_cache", ".hypothesis", ".ruff_cache",
                  "segcore.egg-info")
START_TIMEOUT_S, JOB_TIMEOUT_S, STOP_GRACE_S = 90, 240, 15

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the head's processes in /proc")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command line) of every process we can read in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                command = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), fields[19], command)
    return table


def _head_processes(root_pid: int, temp_dir: str) -> dict[int, str]:
    """The head's processes: the `ray start --block` process, its descendants, and any process whose command line
    names the head's own session folder (they are orphaned once their parent is gone); pid -> start time."""
    table = _processes()
    marker = f"{temp_dir}/session_"
    own = {os.getpid()}
    mine = {pid for pid, (_, _, command) in table.items() if marker in command and pid not in own}
    if root_pid in table:
        mine.add(root_pid)
    grown = True
    while grown:
        children = {pid for pid, (parent, _, _) in table.items() if parent in mine and pid not in own} - mine
        mine |= children
        grown = bool(children)
    return {pid: table[pid][1] for pid in mine}


def _signal(processes: dict[int, str], signum: int) -> None:
    table = _processes()
    for pid, started in processes.items():
        if pid in table and table[pid][1] == started:  # the same process, not a reused pid
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _alive(processes: dict[int, str]) -> list[int]:
    table = _processes()
    return [pid for pid, started in processes.items() if pid in table and table[pid][1] == started
            and not _is_zombie(pid)]


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class Head:
    def __init__(self, temp_dir: str, dashboard_port: int, env: dict, process: subprocess.Popen, log: Path):
        self.temp_dir, self.dashboard_port, self.env, self.process, self.log = (temp_dir, dashboard_port, env,
                                                                                 process, log)
        self.address = f"http://127.0.0.1:{dashboard_port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(RAY), *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO, check=False)

    def stop(self) -> list[int]:
        """SIGTERM to the head's processes (the `--block` process first), SIGKILL to what is left after a grace
        period; returns the pids that needed SIGKILL."""
        processes = _head_processes(self.process.pid, self.temp_dir)  # snapshot while the tree is intact
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        processes.update(_head_processes(self.process.pid, self.temp_dir))
        _signal(processes, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while _alive(processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = _alive(processes)
        _signal(processes, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        deadline = time.monotonic() + 10  # SIGKILLed processes can take a moment to go, on a busy machine
        while _alive(processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        return killed


# Runs `ray start --block` with PR_SET_PDEATHSIG: it gets SIGTERM when the test process dies, even by SIGKILL, and
# then shuts the head down (the signal setting survives the exec; no preexec_fn in a threaded test process).
DIE_WITH_PARENT = ("import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
                   "os.execv(sys.argv[1], sys.argv[1:])")


def _clean_env() -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE",
                          "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES")}
    env.update({
        "RAY_AUTH_MODE": "disabled",  # a throwaway head on loopback, without tokens
        # single-node mode: without it `ray start` replaces --node-ip-address=127.0.0.1 by the machine's routable
        # address and the GCS and raylet listen on all interfaces; with it every port of the head is on 127.0.0.1
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in the entrypoint = the venv's
    })
    return env


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head started with the `ray` CLI (2 CPUs, 1 fake GPU, dashboard + job API on 127.0.0.1)."""
    assert RAY.exists(), f"{RAY} not found: run the tests with the project's venv python"
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Unix socket paths are limited to 107 bytes
    (gcs, dashboard, agent_http, agent_grpc, runtime_env_agent, metrics, client, node_manager,
     object_manager) = _free_ports(9)
    env = _clean_env()
    log = Path(temp_dir) / "ray-start.log"
    command = [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
               "--num-cpus=2", "--num-gpus=1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent_http}",
               f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env_agent}",
               f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
               f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
               "--object-store-memory=200000000", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-c", DIE_WITH_PARENT, *command], env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, cwd=temp_dir, start_new_session=True)
    head = Head(temp_dir, dashboard, env, process, log)
    try:
        _wait_until_ready(head)
        yield head
    finally:
        killed = head.stop()
        left = _alive(_head_processes(-1, temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"head processes still running after the stop: {left}"
        if killed:
            print(f"head processes that needed SIGKILL: {killed}")


def _wait_until_ready(head: Head) -> None:
    """Waits for the job API: the dashboard answers and lists jobs."""
    deadline = time.monotonic() + START_TIMEOUT_S
    error = None
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise AssertionError(f"ray start exited with {head.process.returncode}:\n{head.log_tail()}")
        try:
            with urllib.request.urlopen(f"{head.address}/api/jobs/", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            error = exc
        time.sleep(0.5)
    raise AssertionError(f"the job API did not come up in {START_TIMEOUT_S} s ({error}):\n{head.log_tail()}")


def _job_info(head: Head, submission_id: str) -> dict:
    with urllib.request.urlopen(f"{head.address}/api/jobs/{submission_id}", timeout=10) as response:
        return json.loads(response.read())


def _tree(folder: Path) -> tuple[int, set[str]]:
    """Total file bytes under ``folder`` and the relative paths of its files and folders, without ``__pycache__``
    (Ray never uploads those; they are the job's own imports writing bytecode into the unpacked package)."""
    total, names = 0, set()
    for path in folder.rglob("*"):
        if "__pycache__" in path.parts:
            continue
        names.add(path.relative_to(folder).as_posix())
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total, names


@pytest.mark.slow
def test_ray_job_submit_labels_a_corpus_on_a_started_head(ray_head, tmp_path):
    corpus = write_demo_shards(tmp_path / "corpus", 2, images_per_shard=4)
    output = tmp_path / "labels"
    submission_id = f"segcore-test-{uuid.uuid4().hex[:8]}"
    label = ["python", "-m", "jobs.label", "--input", corpus, "--output", str(output), "--model", "demo",
             "--device", "cpu", "--actors", "1", "--gpus-per-actor", "0", "--cpus-per-actor", "1", "--batch-size", "4"]
    # `ray job submit` quotes every word after `--`, so a compound command needs its own shell
    where = "python -c 'import sys, segcore; print(\"CODE\", sys.executable, segcore.__file__)'"
    entrypoint = ["sh", "-c", f"{where} && {shlex.join(label)}"]
    started = time.monotonic()
    submitted = ray_head.ray("job", "submit", "--address", ray_head.address, "--submission-id", submission_id,
                             "--working-dir", str(REPO), "--", *entrypoint, timeout=JOB_TIMEOUT_S)
    seconds = time.monotonic() - started
    report = (f"exit {submitted.returncode} after {seconds:.0f} s\n"
              f"{submitted.stdout[-6000:]}\n{submitted.stderr[-4000:]}")
    assert submitted.returncode == 0, report
    info = _job_info(ray_head, submission_id)
    assert info["status"] == "SUCCEEDED", report + f"\n{info}"
    status = ray_head.ray("job", "status", "--address", ray_head.address, submission_id)
    assert f"Job '{submission_id}' succeeded" in status.stdout, status

    # the entrypoint ran with the venv's python, and the code came from the uploaded package, not from the repo
    logs = ray_head.ray("job", "logs", "--address", ray_head.address, submission_id).stdout
    code_lines = [line.split() for line in logs.splitlines() if line.startswith("CODE ")]
    assert code_lines, logs[-3000:]
    _, executable, segcore_file = code_lines[0]
    assert Path(executable).parent == VENV_BIN, executable
    package_dir = Path(segcore_file).parent.parent
    assert package_dir != REPO and package_dir.name.startswith("_ray_pkg_"), segcore_file
    assert package_dir.is_relative_to(Path(ray_head.temp_dir)), segcore_file

    # every shard committed; the cluster's metrics.json equals an in-process reduce of the same output
    out = Output.open(str(output))
    assert committed_shards(out) == {"corpus-00000", "corpus-00001"}
    assert {path.name for path in (output / "_done").iterdir()} == {"corpus-00000", "corpus-00001"}
    on_cluster = json.loads((output / "metrics.json").read_text())
    assert on_cluster["images"] == 8
    copy = tmp_path / "labels-copy"
    shutil.copytree(output, copy)
    (copy / "metrics.json").unlink()
    in_process = json.loads(json.dumps(reduce_output(Output.open(str(copy)))))
    assert on_cluster["pq"] == in_process["pq"] and on_cluster["pq_exact"] == in_process["pq_exact"]
    assert "All" in submitted.stdout  # the driver printed the PQ table

    # what was uploaded: the package the job ran in, as the head unpacked it
    uri = info["runtime_env"]["working_dir"]
    assert uri.startswith("gcs://_ray_pkg_") and uri.endswith(".zip"), uri
    assert package_dir.name == uri.removeprefix("gcs://").removesuffix(".zip")
    size, names = _tree(package_dir)
    assert size < MAX_PACKAGE_BYTES, f"working_dir package is {size / 2**20:.1f} MiB"
    top_level = {name.split("/")[0] for name in names}
    assert {"segcore", "jobs", "pyproject.toml"} <= top_level, sorted(top_level)
    uploaded_unwanted = [name for name in NEVER_UPLOADED if name in names]
    assert not uploaded_unwanted, uploaded_unwanted
