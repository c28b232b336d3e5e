"""The UI in a real browser: Debian's chromium driven by Playwright, against `dagster dev`.

Launch the main job from the launchpad for partition `selected`, wait for success, open
selected_subset's page and check that its metadata and a plot render. Screenshots of every
stage are kept under the test's tmp folder (and named in the failure message).
"""

import re
import shutil
from pathlib import Path

import pytest

from .live import DagsterDev

pytestmark = pytest.mark.live

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


@pytest.fixture
def dev(tmp_path):
    server = DagsterDev(tmp_path).start()
    yield server
    server.stop()


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
