"""A real ``dagster dev`` (webserver + daemon + code server) on loopback, for tests that drive
the running system through GraphQL and a browser. Every wait is bounded; ``stop`` ends the whole
process group it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests

from s2l_pipeline.core.support.processes import die_with_parent
from s2l_pipeline.deploy.job_runs import deployment_env, start_main_job
from s2l_pipeline.deploy.local_stack import free_port

from .conftest import PROJECT_ROOT

LOCATION = "s2l_pipeline"
REPO = "__repository__"


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# The main job run on a remote engine and compared with one process (test_live_stack, on Ray;
# test_live_ray, multiprocess).
UNIT = "loss_trajectories.score_trajectory_unit["
# The GPU steps by name: an asset check on a GPU asset (target_evaluation_predictions_not_constant)
# is a CPU step of its own.
GPU_ASSETS = {"proxy_checkpoints", "target_model", "target_evaluation"}
VICTIM = "proxy_checkpoints"  # long enough at the tiny scale to be killed mid-training
SHELLS = {"sh", "bash", "dash"}
# CPU results depend on the thread count: every run compared uses the same (Ray gives a job that
# asked for one CPU a single thread; the executor forwards OMP_NUM_THREADS). One thread: three
# pytest workers share two cores, and a second thread spent its time waiting on the first
# (an in-process run took 22.5 CPU-s with one, 26.9 with two, on an idle machine).
THREADS = {"OMP_NUM_THREADS": "1"}
# Each step on Ray or in its own process starts Python, torch and the code location (seconds):
# 3 checkpoints x 1 row shard keep 3 scoring units (two at once, so both GPUs get one) instead
# of 15. The proxy trains 6 epochs, not 2, so a killed worker is caught mid-training (between
# its first Trainer checkpoint and its last step) even on an idle machine.
FEWER_UNITS = {
    "ops": {
        "proxy_checkpoints": {"config": {"num_checkpoints": 2, "epochs": 6.0}},
        "loss_trajectories": {"ops": {"plan_scoring": {"config": {"shard_rows": 400}}}},
    }
}


# Set by test_live_stopping for the pytest it stops mid-run: that pytest never compares, so its
# in-process run would be 25 CPU-s thrown away.
NO_BASELINE = "S2L_TEST_NO_BASELINE"


class SharedInProcessRun:
    """The tiny main job in one process at FEWER_UNITS and THREADS: what the Ray and the
    multiprocess runs must reproduce byte for byte, run once per pytest session however many
    xdist workers ask. The first to ask starts it (holding a file lock so no one else does); a
    watcher thread marks it done or failed the moment it ends, so the others wait on that mark,
    not on the starter's test (a waiting worker sat idle for minutes of the stack test)."""

    def __init__(self, base: Path):
        from filelock import FileLock

        self.home = base / "in_process" / "home"
        self.done = base / "in_process.done"
        self.failed = base / "in_process.failed"
        self.lock = FileLock(str(base / "in_process.lock"))
        self.proc = None
        if self.done.exists() or self.failed.exists():
            return
        try:
            self.lock.acquire(timeout=0)
        except TimeoutError:
            return  # another worker runs it: ``finished`` waits for its mark
        if self.done.exists() or self.failed.exists():
            self.lock.release()
            return
        local = deployment_env(base / "in_process", "in_process", **THREADS)
        assert Path(local["DAGSTER_HOME"]) == self.home
        self.log = base / "in_process.log"
        self.proc = start_main_job(local, self.log, FEWER_UNITS)
        self.marker = threading.Thread(target=self._mark, args=(self.proc,), daemon=True)
        self.marker.start()

    def _mark(self, proc: subprocess.Popen) -> None:
        code = proc.wait()
        if code == 0:
            self.done.write_text("ok")
        else:
            self.failed.write_text(f"exit {code}:\n{self.log.read_text()[-4000:]}")

    def finished(self):
        """The run's summary, once it has ended (here or in another worker)."""
        from s2l_pipeline.deploy.job_runs import summarize

        def ended():
            if self.failed.exists():
                raise AssertionError(f"the shared in-process run failed: {self.failed.read_text()}")
            if not self.done.exists() and self.proc is None and self._starter_gone():
                raise AssertionError("the worker running the shared in-process run stopped first")
            return self.done.exists()

        wait_for("the shared in-process run", ended, 900, every=0.5)
        return summarize(self.home)

    def _starter_gone(self) -> bool:
        """Nobody holds the lock yet no mark was left: the starting worker died mid-run."""
        try:
            self.lock.acquire(timeout=0)
        except TimeoutError:
            return False
        self.lock.release()
        return not (self.done.exists() or self.failed.exists())

    def stop(self) -> None:
        """End the run if it is still going (a test stopped early) and let others in."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.marker.join()  # the mark is left before others may take the lock
        self.proc = None
        self.lock.release()


def session_base(tmp_path_factory) -> Path:
    """A folder every xdist worker of this pytest session shares (one of its own otherwise)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def is_gpu_step(key: str) -> bool:
    return key in GPU_ASSETS or key.startswith(UNIT)


def step_process(step_prefix: str) -> psutil.Process | None:
    """The running `dagster api execute_step` process of a step whose key starts with the prefix."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            # The step's Python process, not the `/bin/sh -c` Ray wraps the entrypoint in.
            if "execute_step" not in " ".join(cmdline) or Path(cmdline[0]).name in SHELLS:
                continue
            if proc.environ().get("DAGSTER_RUN_STEP_KEY", "").startswith(step_prefix):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def step_started(home: Path, step_key: str, run_id: str) -> bool:
    """Whether Dagster had seen the step start in the run (so a rerun of it is a retry)."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    return any(r.dagster_event.step_key == step_key for r in records)


def key_job(run, key: str) -> str:
    """The killed attempt's Ray job: the retry's id without its attempt suffix."""
    return run.workers[key][-1]["ray_job"].rsplit("-", 1)[0]


def settled_ray_jobs(ray_url: str, timeout: float = 120) -> dict[str, dict]:
    """Ray's step jobs by submission id, once none is pending or running: a Dagster run ends
    when its last step reports success, a moment before that step's Ray job exits."""

    def settled() -> dict[str, dict] | None:
        listed = requests.get(f"{ray_url}/api/jobs/", timeout=10).json()
        jobs = {
            j["submission_id"]: j
            for j in listed
            if (j.get("submission_id") or "").startswith("dagster-step-")
        }
        busy = [j for j in jobs.values() if j["status"] in ("PENDING", "RUNNING")]
        return None if busy else jobs

    return wait_for("Ray's step jobs to end", settled, timeout, every=1)


def project_env(root: Path, profile: str = "tiny") -> dict[str, str]:
    """Environment of a throwaway in-process deployment under ``root`` at ``profile`` scale,
    with one ``gpu`` pool slot as the project's dagster.yaml has."""
    (root / "shards").mkdir(parents=True, exist_ok=True)
    return deployment_env(root, "in_process", profile, gpu_slots=1)


class DagsterGraphQL:
    """The webserver's GraphQL API, as the UI uses it: launch, watch, terminate, sensors."""

    def __init__(self, url: str):
        self.url = url

    def gql(self, query: str, variables: dict | None = None) -> dict:
        resp = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        resp.raise_for_status()
        body = resp.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def location_loaded(self) -> bool:
        data = self.gql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )
        for entry in data["workspaceOrError"]["locationEntries"]:
            err = entry["locationOrLoadError"]
            if err and err["__typename"] == "PythonError":
                raise RuntimeError(f"code location failed to load: {err['message']}")
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                return True
        return False

    def launch(self, job: str, tags: dict[str, str], run_config: dict | None = None) -> str:
        """Launch ``job`` as the UI does (launchPipelineExecution); no run config by default."""
        data = self.gql(
            """mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message } ... on InvalidStepError { invalidStepKey }
                ... on RunConfigValidationInvalid { errors { message } } } }""",
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": REPO,
                        "pipelineName": job,
                    },
                    "runConfigData": run_config or {},
                    "executionMetadata": {
                        "tags": [{"key": k, "value": v} for k, v in tags.items()]
                    },
                }
            },
        )["launchPipelineExecution"]
        if data["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launch failed: {data}")
        return data["run"]["runId"]

    def run_status(self, run_id: str) -> str:
        return self.gql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
        )["runOrError"]["status"]

    def wait_run(self, run_id: str, timeout: float, done=("SUCCESS",)) -> str:
        finished = {"SUCCESS", "FAILURE", "CANCELED"}

        def check():
            status = self.run_status(run_id)
            return status if status in finished else None

        status = wait_for(f"run {run_id} to finish", check, timeout, every=2)
        assert status in done, f"run {run_id} ended {status}\n{self.run_errors(run_id)}"
        return status

    def run_errors(self, run_id: str) -> str:
        events = self.events(run_id)
        return "\n".join(
            f"{e['__typename']}: {e.get('message', '')}"
            for e in events
            if "Failure" in e["__typename"] or e.get("level") == "ERROR"
        )[-4000:]

    def events(self, run_id: str) -> list[dict]:
        out, cursor = [], None
        while True:
            data = self.gql(
                """query($id: ID!, $after: String) { logsForRun(runId: $id, afterCursor: $after) {
                    ... on EventConnection { cursor hasMore events { __typename
                      ... on MessageEvent { message level stepKey } } } } }""",
                {"id": run_id, "after": cursor},
            )["logsForRun"]
            out.extend(data["events"])
            cursor = data["cursor"]
            if not data["hasMore"]:
                return out

    def terminate(self, run_id: str, force: bool = False) -> dict:
        return self.gql(
            """mutation($id: String!, $policy: TerminateRunPolicy) {
                terminateRun(runId: $id, terminatePolicy: $policy) { __typename
                  ... on TerminateRunFailure { message } ... on PythonError { message } } }""",
            {"id": run_id, "policy": "MARK_AS_CANCELED_IMMEDIATELY" if force else None},
        )["terminateRun"]

    def start_sensor(self, name: str) -> str:
        data = self.gql(
            """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename
                ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
            {"s": {"repositoryLocationName": LOCATION, "repositoryName": REPO, "sensorName": name}},
        )["startSensor"]
        assert data["__typename"] == "Sensor", data
        return data["sensorState"]["status"]

    def latest_materialization(self, asset: str, partition: str | None = None) -> dict | None:
        """runId, timestamp and metadata (label -> value) of the asset's latest materialization."""
        data = self.gql(
            """query($k: AssetKeyInput!, $p: [String!]) { assetOrError(assetKey: $k) {
                ... on Asset { assetMaterializations(limit: 1, partitions: $p) { runId timestamp
                  metadataEntries { label __typename
                    ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text }
                    ... on JsonMetadataEntry { jsonString } ... on FloatMetadataEntry { floatValue }
                    ... on PathMetadataEntry { path } } } } } }""",
            {"k": {"path": [asset]}, "p": [partition] if partition else None},
        )["assetOrError"]
        mats = (data or {}).get("assetMaterializations") or []
        if not mats:
            return None
        m = mats[0]
        values = {}
        for e in m["metadataEntries"]:
            for key in ("intValue", "text", "jsonString", "floatValue", "path"):
                if key in e:
                    values[e["label"]] = e[key]
        return {"runId": m["runId"], "timestamp": float(m["timestamp"]), "metadata": values}

    def runs(self) -> list[dict]:
        return self.gql(
            """{ runsOrError(limit: 100) { ... on Runs { results { runId status jobName
                tags { key value } } } } }"""
        )["runsOrError"]["results"]


class DagsterDev(DagsterGraphQL):
    """``dagster dev`` for the project's code location, with its instance under ``root``."""

    def __init__(self, root: Path, profile: str = "tiny"):
        self.root = root
        self.env = project_env(root, profile)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "dagster_dev.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> DagsterDev:
        exe = Path(sys.executable).with_name("dagster")
        workspace = str(PROJECT_ROOT / "workspace.yaml")  # names the location s2l_pipeline
        cmd = [str(exe), "dev", "-w", workspace, "-h", "127.0.0.1"]
        cmd += ["-p", str(self.port)]
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root / "home",  # dagster.yaml keeps storage relative to the working dir
            env=self.env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        wait_for("the webserver to answer", self._up, timeout)
        wait_for("the code location to load", self.location_loaded, timeout, every=2)
        return self

    def _up(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited: {self.log_tail()}")
        try:
            return requests.get(f"{self.url}/server_info", timeout=2).ok
        except requests.RequestException:
            return False

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group go too
            os.killpg(self.proc.pid, signal.SIGKILL)
