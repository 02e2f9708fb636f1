"""batchfn studio in a real Chromium against devhost + Azurite + the real scoring runtime.

One devhost serves the module. Its endpoint, deployments, tags, input file names and error
messages hold `<script>`, `<img onerror>`, quotes and `&`: the page must show them as text
and run none of them (`window.__pwned` stays undefined). Screenshots of the main views are
saved under test-artifacts/studio/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
import requests
from click.testing import CliRunner
from playwright.sync_api import expect

from batchfn.cli import cli
from batchfn.client import BatchfnClient
from samples.breast_cancer.dataset import SAMPLE_DIR as MLFLOW_SAMPLE
from tests.conftest import deploy_test_script, ensure_compute

ENDPOINT = "studio-e2e"
ENDPOINT_DESCRIPTION = 'Digits <script>window.__pwned = 1</script> & "friends"'
DEPLOYMENT_DESCRIPTION = "<img src=x onerror=\"window.__pwned = 2\"> echo & 'co'"
TAGS = {"owner": "<b>ana</b> & 'bo'", "stage": '"dev"'}
FAIL_MESSAGE = '<script>window.__pwned = 3</script> & "bad" input'
EVIL_NAMES = ['<img src=x onerror="window.__pwned = 4"> & q.bin', "<script>x & \"y\".bin"]
PWNED = "() => window.__pwned === undefined"
TERMINAL = ("Completed", "Failed", "Canceled", "Expired")
DIGITS = 24


def _deploy(client: BatchfnClient, scratch: Path, name: str, script: str, settings: dict,
            env: dict[str, str] | None = None, **fields) -> None:
    deploy_test_script(client, scratch, ENDPOINT, name, script, settings, env,
                       set_default=name == "echo", **fields)


def _upload(client: BatchfnClient, scratch: Path, name: str, files: list[str]) -> str:
    folder = scratch / "inputs" / name
    folder.mkdir(parents=True)
    for i, file_name in enumerate(files):
        (folder / file_name).write_bytes(b"x" * (i + 1))
    return client.upload_input(folder)[0]


@pytest.fixture(scope="module")
def studio(host, scratch):
    """The devhost, its key, and the inputs the tests invoke on."""
    client = BatchfnClient(url=host.url, key=host.key)
    ensure_compute(client)  # the MLflow sample deployment's batch-cluster
    client.create_endpoint(document={"name": ENDPOINT, "description": ENDPOINT_DESCRIPTION,
                                     "tags": TAGS})
    _deploy(client, scratch, "echo", "echo.py", {"mini_batch_size": 2},
            {"ECHO_SLEEP": "0.5"}, description=DEPLOYMENT_DESCRIPTION, tags={"k": "<i>v</i>"})
    _deploy(client, scratch, "fails", "always_fails.py",
            {"mini_batch_size": 1, "retry_settings": {"max_retries": 0}},
            {"ALWAYS_FAILS_MESSAGE": FAIL_MESSAGE, "ALWAYS_FAILS_WHEN_NAME_CONTAINS": "<"})
    _deploy(client, scratch, "slow", "echo.py", {"mini_batch_size": 1}, {"ECHO_SLEEP": "1"})
    _deploy(client, scratch, "rows", "rows.py", {"mini_batch_size": 3, "input_format": "csv"})
    # An MLflow model alone: no code_configuration, the built-in scorer.
    deployed = CliRunner().invoke(cli, [
        "batch-deployment", "create", "--file",
        str(MLFLOW_SAMPLE / "deployment-mlflow" / "deployment.yml"), "--endpoint-name", ENDPOINT,
        "--name", "mlflow"], env={"BATCHFN_URL": host.url, "BATCHFN_KEY": host.key})
    assert deployed.exit_code == 0, deployed.output
    table = scratch / "inputs" / "table.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("id,value\n" + "".join(f"r{i},{i}\n" if i != 4 else "r4,4,extra\n"
                                             for i in range(8)))
    inputs = {
        "digits": _upload(client, scratch, "digits", [f"d{i:02d}.png" for i in range(DIGITS)]),
        "evil": _upload(client, scratch, "evil", EVIL_NAMES + ["fine.bin"]),
        "table": client.upload_input(table)[0],
    }
    return {"url": host.url, "key": host.key, "client": client, "inputs": inputs}


def _open(page, studio, view: str = "") -> None:
    fragment = f"#key={quote(studio['key'], safe='')}" + (f"&view={quote(view)}" if view else "")
    page.goto(f"{studio['url']}/api/studio/{fragment}")


def _wait_status(page, statuses: str) -> str:
    head = page.locator(".page-head[data-status]")
    expect(head).to_have_attribute("data-status", re.compile(f"^({statuses})$"), timeout=60_000)
    return head.get_attribute("data-status")


def _screenshot_while_running(page, screenshot, name: str) -> None:
    """Screenshot the job page once it shows some files done but not all (or, should the
    orchestrator's checks jump from none to all on a loaded machine, once it ends)."""
    bar = page.locator(".big-progress progress")
    head = page.locator(".page-head[data-status]")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = bar.get_attribute("value") if bar.count() else None
        if value and 0 < float(value) < 100:
            break
        if head.count() and head.get_attribute("data-status") in TERMINAL:
            break
        page.wait_for_timeout(100)
    screenshot(name)


def test_without_a_key_nothing_is_shown_or_asked(page, studio):
    api_calls = []
    page.on("request", lambda r: api_calls.append(r.url) if "/api/studio" not in r.url else None)
    response = page.goto(f"{studio['url']}/api/studio/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    page.wait_for_load_state("networkidle")
    assert api_calls == []
    assert ENDPOINT not in page.content()
    assert page.evaluate("() => sessionStorage.length") == 0
    # Without the trailing slash, the console redirects to it.
    page.goto(f"{studio['url']}/api/studio")
    assert page.url.endswith("/api/studio/")
    expect(page.locator("#key-form")).to_be_visible()


def test_a_refused_key_shows_no_data(page, studio):
    page.log.allowed.append("401")  # the browser reports the refused request itself
    page.goto(f"{studio['url']}/api/studio/#key=not-the-key")
    expect(page.locator("#key-form .notice.error")).to_contain_text("refused")
    assert ENDPOINT not in page.content()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_batchfn_studio_opens_the_console_listing_endpoints_as_text(page, studio, host,
                                                                   screenshot):
    # The CLI finds the local devhost's key by itself and puts it in the URL's fragment.
    result = CliRunner().invoke(cli, ["studio", "--no-browser"], env={
        "BATCHFN_URL": host.url, "DEVHOST_STATE_DIR": str(host.state_path.parent)})
    assert result.exit_code == 0, result.output
    page.goto(result.stdout.strip())
    card = page.locator(f'section[data-endpoint="{ENDPOINT}"]')
    expect(card).to_be_visible()
    # The key left the address bar and lives in this tab's sessionStorage only.
    assert "key=" not in page.url and page.url.endswith("#/endpoints")
    assert page.evaluate("() => Object.values(sessionStorage)") == [studio["key"]]
    expect(card.locator(".description")).to_have_text(ENDPOINT_DESCRIPTION)
    expect(card.locator(".tags li")).to_have_text([f"{k}: {v}" for k, v in TAGS.items()])
    rows = card.locator("tr[data-deployment]")
    expect(rows).to_have_count(5)
    expect(card.locator('tr[data-deployment="mlflow"] td').nth(2)).to_have_text(
        "MLflow (built-in)")
    expect(card.locator('tr[data-deployment="echo"] .badge.default')).to_be_visible()
    assert card.locator("script, img, b").count() == 0
    assert page.evaluate(PWNED)
    screenshot("endpoints")

    # Set the default from the list, and back.
    card.locator('tr[data-deployment="slow"] button', has_text="Set as default").click()
    expect(page.locator(f'section[data-endpoint="{ENDPOINT}"] tr[data-deployment="slow"] '
                        ".badge.default")).to_be_visible()
    assert studio["client"].get_endpoint(ENDPOINT)["defaults"]["deployment_name"] == "slow"
    page.locator(f'section[data-endpoint="{ENDPOINT}"] tr[data-deployment="echo"] button').click()
    expect(page.locator(f'section[data-endpoint="{ENDPOINT}"] tr[data-deployment="echo"] '
                        ".badge.default")).to_be_visible()
    assert studio["client"].get_endpoint(ENDPOINT)["defaults"]["deployment_name"] == "echo"


def test_invoke_form_runs_a_job_to_completed_at_100_percent(page, studio, screenshot):
    _open(page, studio, f"/invoke?endpoint={ENDPOINT}")
    page.fill("#invoke-input", studio["inputs"]["digits"])
    page.locator("details.settings summary").click()
    page.fill("#invoke-output_file_name", "digits.csv")
    page.click("#invoke-submit")
    page.wait_for_url(re.compile(r"#/jobs/batchjob-"))
    job = page.url.rsplit("/", 1)[1]
    _screenshot_while_running(page, screenshot, "job-live")
    assert _wait_status(page, "Completed|Failed") == "Completed"
    bar = page.locator(".big-progress progress")
    expect(bar).to_have_attribute("value", "100.0")
    expect(page.locator(".big-progress")).to_contain_text("100 %")
    expect(page.locator("table.counts tr", has_text="Files")).to_contain_text(str(DIGITS))
    expect(page.locator("#errors")).to_contain_text("No failed files.")
    # The output downloads through the API (the key in a header, not in a link).
    with page.expect_download() as caught:
        page.click("#download-score")
    download = caught.value
    assert download.suggested_filename == "digits.csv"
    lines = Path(download.path()).read_text().splitlines()
    assert [line.split()[0] for line in lines] == [f"d{i:02d}.png" for i in range(DIGITS)]
    # The finished job keeps its throughput chart and shows in the jobs list at 100 %.
    page.goto(f"{studio['url']}/api/studio/#/jobs?endpoint={ENDPOINT}&status=Completed")
    row = page.locator(f'tr[data-job="{job}"]')
    expect(row.locator("progress")).to_have_attribute("value", "100.0")
    expect(row.locator(".status")).to_have_text("Completed")
    screenshot("jobs")
    # A finished job keeps its throughput chart.
    page.click(f'tr[data-job="{job}"] a')
    expect(page.locator("#throughput svg.chart path.line-ok")).to_be_visible()


def test_a_tabular_job_shows_rows_and_its_failed_row(page, studio):
    job = studio["client"].invoke(ENDPOINT, studio["inputs"]["table"], input_type="uri_file",
                                  deployment_name="rows")["name"]
    _open(page, studio, f"/jobs/{job}")
    assert _wait_status(page, "Completed|Failed") == "Completed"
    expect(page.locator(".big-progress")).to_contain_text("8/8 rows")
    expect(page.locator("table.counts tr", has_text="Rows")).to_contain_text("7")
    expect(page.locator(".facts")).to_contain_text(["Input formatcsv: mini-batches of rows"])
    errors = page.locator("table.errors tr.error-row")
    expect(errors).to_have_count(1)
    expect(errors.locator("td.file")).to_have_text("table.csv")
    expect(errors.locator("td.row")).to_have_text("4")
    expect(errors.locator("td.message")).to_have_text(
        "expected 2 fields as in the header, found 3")
    expect(page.locator("#throughput figcaption")).to_contain_text("rows/s succeeded")


def test_deployment_view_shows_settings_assets_and_jobs(page, studio, screenshot):
    _open(page, studio, f"/endpoints/{ENDPOINT}/deployments/echo")
    expect(page.locator("h1")).to_contain_text("echo")
    expect(page.locator(".description")).to_have_text(DEPLOYMENT_DESCRIPTION)
    assets = page.locator("table.assets tbody tr")
    expect(assets).to_have_count(2)
    expect(assets.nth(0)).to_contain_text("model")
    expect(assets.nth(1)).to_contain_text(f"{ENDPOINT}-echo-code")
    expect(page.locator(".facts")).to_contain_text(["Mini-batch size (files)2"])
    expect(page.locator("table.environment")).to_contain_text("ECHO_SLEEP")
    # Its jobs, with their progress (the invoke test's job has finished).
    expect(page.locator("table.jobs progress").first).to_have_attribute("value", "100.0")
    assert page.locator("main img").count() == 0 and page.evaluate(PWNED)
    screenshot("deployment")


def test_failing_files_show_their_traceback_as_text(page, studio, screenshot):
    job = studio["client"].invoke(ENDPOINT, studio["inputs"]["evil"],
                                  deployment_name="fails")["name"]
    _open(page, studio, f"/jobs/{job}")
    _wait_status(page, "Completed")
    rows = page.locator("table.errors tr.error-row")
    expect(rows).to_have_count(2)
    expect(rows.locator("td.file")).to_have_text(sorted(EVIL_NAMES))
    expect(rows.first.locator("td.message")).to_have_text(f"ValueError: {FAIL_MESSAGE}")
    details = page.locator("details.traceback").first
    expect(details.locator("summary")).to_contain_text("failed at always_fails.py:")
    details.locator("summary").click()
    traceback = details.locator("pre")
    expect(traceback).to_contain_text('always_fails.py", line')
    expect(traceback).to_contain_text(f"ValueError: {FAIL_MESSAGE}")
    expect(traceback).not_to_contain_text("shared/scoring")
    assert page.locator("main img, main script, main b").count() == 0
    screenshot("job-errors")
    # A failed attempt's log opens in the page.
    page.locator("table.logs tr", has_text="(failed)").first.locator("button",
                                                                      has_text="View").click()
    expect(page.locator(".log-viewer pre")).to_contain_text("about to fail")
    assert page.evaluate(PWNED)
    # Rerun the failed files: a new job over just those two.
    page.click("#rerun-failed")
    page.wait_for_url(lambda url: "#/jobs/batchjob-" in url and not url.endswith(job))
    _wait_status(page, "Completed")
    expect(page.locator("table.counts")).to_contain_text("2")


def test_cancel_from_the_job_page(page, studio):
    job = studio["client"].invoke(ENDPOINT, studio["inputs"]["digits"],
                                  deployment_name="slow")["name"]
    _open(page, studio, f"/jobs/{job}")
    _wait_status(page, "Queued|Running")
    page.click("#cancel-job")
    page.click("#confirm-cancel")
    assert _wait_status(page, "Canceled") == "Canceled"
    expect(page.locator(".notice")).to_contain_text("canceled by request")
    assert studio["client"].get_job(job)["status"] == "Canceled"


def test_an_expired_job_shows_its_partial_output_events_and_usage(page, studio, screenshot):
    # 24 one-second mini-batches on one worker slot cannot end within 12 s, and a loaded
    # machine still starts some of them first (only those a slot took in time run).
    job = studio["client"].invoke(ENDPOINT, studio["inputs"]["digits"], deployment_name="slow",
                                  settings={"deadline": "12s"})["name"]
    _open(page, studio, f"/jobs/{job}")
    assert _wait_status(page, "Expired|Completed|Failed") == "Expired"
    expect(page.locator(".page-head .status")).to_have_text("Expired")
    expect(page.locator(".notice")).to_contain_text("deadline")
    expect(page.locator(".facts")).to_contain_text(["partial"])
    final = studio["client"].get_job(job)
    scored, not_started = (final["progress"]["inputs"][key] for key in ("succeeded",
                                                                         "not_started"))
    assert scored and not_started and scored + not_started == DIGITS
    expect(page.locator("table.counts td.not_started").first).to_have_text(str(not_started))
    events = page.locator("table.events tbody tr")
    expect(events.last.locator("td.type")).to_have_text("batchfn.job.expired")
    expect(events.first.locator("td.type")).to_have_text("batchfn.job.created")
    expect(page.locator("#usage")).to_contain_text("Estimated cost")
    expect(page.locator("#usage")).to_contain_text(f"{scored} files")
    expect(page.locator("#rerun-failed")).to_have_text("Rerun failed and not started")
    with page.expect_download() as caught:
        page.click("#download-score")
    assert len(Path(caught.value.path()).read_text().splitlines()) == scored
    screenshot("job-expired")


def test_static_files_are_served_strictly(studio):
    base = f"{studio['url']}/api/studio/"
    page = requests.get(base, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    script = requests.get(base + "js/main.js", timeout=10)
    assert script.headers["Content-Type"].startswith("text/javascript")
    again = requests.get(base + "js/main.js", headers={"If-None-Match": script.headers["ETag"]},
                         timeout=10)
    assert again.status_code == 304
    for path in ("../host.json", "..%2Fhost.json", "js/../../function_app.py", "nope.js"):
        assert requests.get(base + path, timeout=10).status_code == 404, path
    # The API itself still asks for the key.
    assert requests.get(f"{studio['url']}/api/endpoints", timeout=10).status_code == 401


def test_the_jobs_list_pages_with_the_apis_continuation(page, studio):
    # More jobs of one deployment than a page shows (20): the second page comes from the
    # API's continuation token, with none of the first page's jobs.
    client = studio["client"]
    for number in range(21):
        client.invoke(ENDPOINT, studio["inputs"]["table"], input_type="uri_file",
                      deployment_name="rows", job_name=f"paged-{number:02d}")
    _open(page, studio, f"/jobs?endpoint={ENDPOINT}&deployment=rows")
    rows = page.locator("table.jobs tr[data-job]")
    expect(rows).to_have_count(20)
    first = set(rows.evaluate_all("rows => rows.map(row => row.dataset.job)"))
    assert "paged-20" in first  # newest first
    expect(page.locator("nav.pager")).to_contain_text("page 1")
    page.click("nav.pager a:has-text('Older')")
    expect(page.locator("nav.pager")).to_contain_text("page 2")
    assert "continuation=" in page.url
    expect(rows.first).to_be_visible()
    second = set(rows.evaluate_all("rows => rows.map(row => row.dataset.job)"))
    assert second and not second & first and "paged-00" in second | first
    page.click("nav.pager a:has-text('Newest')")
    expect(page.locator("nav.pager")).to_contain_text("page 1")
    expect(rows).to_have_count(20)


def test_a_summary_only_jobs_output_folder_downloads_file_by_file(page, studio, scratch):
    client = studio["client"]
    deploy_test_script(client, scratch, ENDPOINT, "files", "writes_files.py",
                       {"mini_batch_size": 8, "output_action": "summary_only"})
    job = client.invoke(ENDPOINT, studio["inputs"]["digits"], deployment_name="files")["name"]
    _open(page, studio, f"/jobs/{job}")
    assert _wait_status(page, "Completed|Failed") == "Completed"
    expect(page.locator(".facts")).to_contain_text(["Computedefault"])
    # Azure ML's `score` output folder: what the script wrote, one file per mini-batch.
    rows = page.locator("#outputs table.outputs tr[data-output]")
    expect(rows).to_have_count(DIGITS // 8)
    expect(page.locator("#download-score")).to_have_count(0)  # nothing merged
    with page.expect_download() as caught:
        page.locator('tr[data-output="part-d08.parquet"] button').click()
    assert caught.value.suggested_filename == "part-d08.parquet"
    frame = pd.read_parquet(caught.value.path())
    assert list(frame["file"]) == [f"d{i:02d}.png" for i in range(8, 16)]
