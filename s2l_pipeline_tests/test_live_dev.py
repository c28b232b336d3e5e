"""The deployed system as its users drive it: one real `dagster dev` (webserver, daemon, code
server) on loopback for the whole module, driven through GraphQL and a real browser.

In order, on the same instance:
- Cancel from GraphQL while the proxy trains: the step stops within seconds, is not retried,
  leaves no process behind, its MLflow run is marked KILLED and the gpu pool slot is free again.
  A forced cancel (the UI's "terminate immediately", which only marks the run) stops the worker
  too: training polls the run status. A run worker killed by SIGKILL (the OOM killer) is marked
  failed and its slot freed without anyone deleting runs. Each test's run gets the slot the test
  before it freed; the browser's run after them goes through to the end.
- The UI in Debian's chromium driven by Playwright: launch the main job from the launchpad for
  partition `selected`, wait for success, open the asset pages and check that metadata, plots,
  checks and the step log render. Screenshots of every stage are kept under the test's tmp folder
  (and named in the failure message).
- Refresh: a shard file lands in the shard folder; the daemon's sensor launches the shard run
  and declarative automation re-materializes the pool, the clusters and the subset, with nobody
  clicking anything, at the deployment's scale.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from .conftest import PROJECT_ROOT
from .helpers import new_rows, write_shard
from .live import DagsterDev, wait_for

pytestmark = pytest.mark.live

LONG_PROXY = {"ops": {"proxy_checkpoints": {"config": {"epochs": 400.0}}}}
RETRY_EVENTS = {"ExecutionStepUpForRetryEvent", "ExecutionStepRestartEvent"}
SELECTED = {"dagster/partition": "selected"}
README = (PROJECT_ROOT / "README.md").read_text()

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root in a closed network: no sandbox, no background connections to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    """One `dagster dev` for the module (a tiny-scale deployment, one gpu slot)."""
    server = DagsterDev(tmp_path_factory.mktemp("dagster_dev"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def main_run(dev: DagsterDev) -> str:
    """The id of a successful main-job run on ``dev``: the browser test's when it ran first,
    else one launched here without run config, as the UI's Materialize button does."""
    for run in dev.runs():
        tags = {t["key"]: t["value"] for t in run["tags"]}
        partition = tags.get("dagster/partition") == "selected"
        if run["jobName"] == "s2l_job" and run["status"] == "SUCCESS" and partition:
            return run["runId"]
    run_id = dev.launch("s2l_job", SELECTED)
    dev.wait_run(run_id, timeout=600)
    return run_id


# ---------------------------------------------------------------------------- cancel


def mlflow_statuses(dev: DagsterDev, run_id: str) -> list[tuple[str]]:
    """Status of each MLflow run tagged with this Dagster run (the local SQLite store)."""
    with sqlite3.connect(dev.root / "data" / "mlflow" / "mlflow.db") as db:
        return db.execute(
            "select r.status from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key = 'dagster.run_id' and t.value = ?",
            (run_id,),
        ).fetchall()


def gpu_slot_holders(dev: DagsterDev) -> list[dict]:
    """The runs and steps holding a slot of the gpu pool, as the UI's pool page shows them."""
    return dev.gql(
        """{ instance { concurrencyLimit(concurrencyKey: "gpu") {
            claimedSlots { runId stepKey } } } }"""
    )["instance"]["concurrencyLimit"]["claimedSlots"]


def descendants(dev: DagsterDev) -> set[int]:
    return {p.pid for p in psutil.Process(dev.proc.pid).children(recursive=True)}


def training_started(dev: DagsterDev) -> bool:
    return any((dev.root / "data" / "work" / "proxy").glob("*/exports.json"))


def start_long_training(dev: DagsterDev) -> tuple[str, set[int]]:
    """Launch a long proxy training and wait until it trains, which needs the gpu slot (so the
    test before it must have freed it); (run id, the run's new worker processes)."""
    for f in (dev.root / "data" / "work" / "proxy").glob("*/exports.json"):
        f.unlink()
    before = descendants(dev)
    run_id = dev.launch("s2l_job", SELECTED, LONG_PROXY)
    wait_for("the proxy to start training", lambda: training_started(dev), 300, every=0.5)
    # Run workers (and their helpers); not the code server's multiprocessing resource tracker,
    # which lives as long as the code server.
    workers = {p for p in descendants(dev) - before if "resource_tracker" not in " ".join(_cmd(p))}
    assert workers, "no run worker process found"
    return run_id, workers


def cancel_mid_training(dev: DagsterDev, force: bool) -> tuple[str, float]:
    """Launch a long proxy training, cancel it once training runs; (run id, seconds)."""
    run_id, workers = start_long_training(dev)
    time.sleep(2)
    t0 = time.monotonic()
    result = dev.terminate(run_id, force=force)
    assert result["__typename"] == "TerminateRunSuccess", result
    dev.wait_run(run_id, timeout=60, done=("CANCELED",))
    gone = wait_for(
        f"the run worker to exit: {_cmdlines(workers)}",
        lambda: not any(psutil.pid_exists(p) and _alive(p) for p in workers),
        timeout=60,
        every=0.5,
    )
    assert gone
    return run_id, time.monotonic() - t0


def wait_slot_free(dev: DagsterDev, run_id: str) -> None:
    wait_for(
        f"run {run_id} to give back its gpu slot",
        lambda: not any(s["runId"] == run_id for s in gpu_slot_holders(dev)),
        timeout=120,
        every=1,
    )


def _cmdlines(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            cmd = " ".join(proc.cmdline())[:200]
            out.append(f"{pid} ({proc.status()}, cpu {proc.cpu_percent(0.2):.0f}%): {cmd}")
        except psutil.NoSuchProcess:
            out.append(f"{pid}: (gone)")
    return out


def _cmd(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_cancel_stops_training_without_retry(dev: DagsterDev) -> None:
    run_id, seconds = cancel_mid_training(dev, force=False)
    assert seconds < 30, f"cancel took {seconds:.0f} s"
    events = dev.events(run_id)
    kinds = {e["__typename"] for e in events}
    assert not kinds & RETRY_EVENTS, "an interrupted step was retried"
    proxy_starts = [
        e
        for e in events
        if e["__typename"] == "ExecutionStepStartEvent" and e["stepKey"] == "proxy_checkpoints"
    ]
    assert len(proxy_starts) == 1
    # The step closes its MLflow run as it stops; when its process ends first (a loaded
    # machine), the daemon's mlflow_cancel_closer sensor does.
    wait_for(
        "the canceled run's MLflow run to be marked KILLED",
        lambda: mlflow_statuses(dev, run_id) == [("KILLED",)],
        timeout=120,
        every=2,
    )
    wait_slot_free(dev, run_id)


def test_forced_cancel_stops_the_worker_and_frees_the_pool(dev: DagsterDev) -> None:
    run_id, seconds = cancel_mid_training(dev, force=True)
    assert seconds < 30, f"the worker ran on for {seconds:.0f} s after a forced cancel"
    wait_slot_free(dev, run_id)  # the next test's training takes it


def test_sigkilled_run_worker_frees_its_pool_slot(dev: DagsterDev) -> None:
    """The OOM killer takes the run worker: the run is marked failed and its gpu slot freed
    without anyone deleting runs (the browser test's run, next, needs it)."""
    run_id, workers = start_long_training(dev)
    spawned = [p for p in workers if "spawn_main" in " ".join(_cmd(p))]
    assert spawned, f"no run worker process found among {_cmdlines(workers)}"
    for pid in spawned:
        psutil.Process(pid).kill()
    dev.wait_run(run_id, timeout=120, done=("FAILURE",))
    # The worker could not close its MLflow run; the daemon's mlflow_run_closer sensor does.
    wait_for(
        "the killed run's MLflow run to be marked KILLED",
        lambda: mlflow_statuses(dev, run_id) == [("KILLED",)],
        timeout=120,
        every=2,
    )
    wait_slot_free(dev, run_id)


# ---------------------------------------------------------------------------- the UI


def test_launchpad_run_and_asset_page(dev: DagsterDev, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import expect, sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{dev.url}/locations/s2l_pipeline/jobs/s2l_job/playground")
            page.get_by_role("button", name="Skip").click()  # the first-visit newsletter dialog
            # The launchpad shows the deployment's (tiny) scale as the config defaults.
            expect(page.get_by_text("proxy-tiny").first).to_be_visible()
            partition = page.get_by_placeholder("Partition")
            partition.click()
            partition.fill("selected")
            page.keyboard.press("Enter")
            page.screenshot(path=shots / "1_launchpad.png")
            page.get_by_role("button", name="Launch Run").click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"))
            run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
            page.screenshot(path=shots / "2_run.png")
            dev.wait_run(run_id, timeout=600)
            tags = {
                t["key"]: t["value"] for r in dev.runs() if r["runId"] == run_id for t in r["tags"]
            }
            assert tags["dagster/partition"] == "selected"

            # The README's link opens the asset graph with its groups open: assets, not boxes.
            [link] = re.findall(r"http://127\.0\.0\.1:3000(/asset-groups\?expanded=\S+)", README)
            page.goto(f"{dev.url}{link}")
            for asset in ("raw_dataset", "selected_subset", "target_evaluation"):
                expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            page.screenshot(path=shots / "0_asset_graph.png")

            page.goto(f"{dev.url}/assets/selected_subset")
            expect(page.get_by_text("Row count")).to_be_visible()
            expect(page.get_by_text("per_source", exact=True)).to_be_visible()
            expect(page.get_by_text("basic_arithmetic").first).to_be_visible()
            page.screenshot(path=shots / "3_asset.png")
            row = page.get_by_role("row").filter(has_text="per_source_chart")
            row.scroll_into_view_if_needed()
            row.get_by_text("[Show Markdown]").click()
            img = page.get_by_role("dialog").locator("img[src^='data:image/png']")
            expect(img).to_be_visible()
            assert img.evaluate("i => i.complete && i.naturalWidth > 100")
            page.wait_for_timeout(500)  # let the dialog finish fading in
            page.screenshot(path=shots / "4_plot.png")

            # The proxy's training loss is a plot on its asset page.
            page.goto(f"{dev.url}/assets/proxy_checkpoints")
            expect(page.get_by_text("final_training_loss", exact=True)).to_be_visible()
            row = (
                page.get_by_role("row")
                .filter(has_text="training_loss")
                .filter(has_text="[Show Markdown]")
            )
            row.scroll_into_view_if_needed()
            row.get_by_text("[Show Markdown]").click()
            img = page.get_by_role("dialog").locator("img[src^='data:image/png']")
            expect(img).to_be_visible()
            assert img.evaluate("i => i.complete && i.naturalWidth > 100")
            page.wait_for_timeout(500)
            page.screenshot(path=shots / "5_training_loss.png")

            # S2L's premise, checked on this data: the clusters' asset check and its numbers.
            page.goto(f"{dev.url}/assets/trajectory_clusters?view=checks")
            # (the Checks view opens on its only check, showing its latest evaluation)
            expect(
                page.get_by_text(re.compile(r"gradient cosine within clusters 0\.\d+ vs random"))
            ).to_be_visible()
            expect(page.get_by_text("same_source_cosine", exact=True).first).to_be_visible()
            page.screenshot(path=shots / "6_premise_check.png")

            # The checks that guard the numbers: the scorer reads each set's own references,
            # and a collapsed target is called out (the tiny target answers one string).
            page.goto(f"{dev.url}/assets/eval_sets?view=checks")
            page.get_by_text("references_score_as_correct").first.click()
            expect(
                page.get_by_text(re.compile(r"references of all \d+ answer-scored sets score"))
            ).to_be_visible()
            expect(page.get_by_text("reference_accuracy", exact=True).first).to_be_visible()
            page.screenshot(path=shots / "7_reference_check.png")
            page.goto(f"{dev.url}/assets/target_evaluation?view=checks")
            expect(
                page.get_by_text(re.compile(r"one prediction covers more than half of \d+"))
            ).to_be_visible()
            expect(page.get_by_text("modal_prediction", exact=True).first).to_be_visible()
            page.screenshot(path=shots / "8_constant_check.png")

            # The progress lines are in the proxy step's log in the UI, as on the terminal.
            page.goto(f"{dev.url}/runs/{run_id}?logs=step%3Aproxy_checkpoints")
            line = page.get_by_text(re.compile(r"training \[#+\] \d+/\d+ steps 100%"))
            expect(line).to_be_visible(timeout=30_000)
            line.scroll_into_view_if_needed()
            page.screenshot(path=shots / "9_step_log.png")
        except Exception as exc:
            page.screenshot(path=shots / "failure.png")
            raise AssertionError(f"{exc}\nscreenshots: {shots}\n{dev.log_tail(2000)}") from exc
        finally:
            browser.close()


# ---------------------------------------------------------------------------- refresh


def test_new_shard_is_reselected_by_the_daemon(dev: DagsterDev, main_run: str) -> None:
    """Last in the module: it starts the sensors, which keep launching runs."""
    raw = dev.latest_materialization("raw_dataset")
    assert raw["metadata"]["dagster/row_count"] == 400  # the deployment's tiny scale
    first_subset = dev.latest_materialization("selected_subset")
    assert first_subset["runId"] == main_run

    # The shard lands first, so the sensor's first tick finds it (the next is 60 s later).
    write_shard(dev.root / "shards" / "fresh.jsonl", new_rows(40, 7))
    for sensor in ("shard_sensor", "default_automation_condition_sensor"):
        assert dev.start_sensor(sensor) == "RUNNING"

    def reselected():
        m = dev.latest_materialization("selected_subset")
        return m if m and m["timestamp"] > first_subset["timestamp"] else None

    subset = wait_for("automation to re-select the subset", reselected, timeout=600, every=5)
    lineage = json.loads(subset["metadata"]["lineage"])
    assert "fresh.jsonl" in lineage["dataset"]["shards"]

    runs = dev.runs()
    tags = [{t["key"]: t["value"] for t in r["tags"]} for r in runs]
    shard_runs = [t for t in tags if t.get("dagster/sensor_name") == "shard_sensor"]
    assert shard_runs and shard_runs[0]["dagster/partition"] == "fresh.jsonl"
    auto = [
        r for r, t in zip(runs, tags, strict=True) if t.get("dagster/from_automation_condition")
    ]
    assert auto, f"no automation run among {[(r['jobName'], r['status']) for r in runs]}"
    # Automation ran at the deployment's scale: the tiny profile's K=8, not the default 100.
    clusters = dev.latest_materialization("trajectory_clusters")
    assert clusters["runId"] != main_run
    assert clusters["metadata"]["n_clusters"] == 8
    pool = dev.latest_materialization("training_pool")
    assert pool["metadata"]["n_shards"] == 1
