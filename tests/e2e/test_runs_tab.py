"""The Runs tab in a real browser (Debian's chromium through Playwright) against the launched app and its worker:
the panel keeps the run a person picked while another trains, a link opens a tab and run, a pick right after
opening the tab is never overwritten, and the artifact download is built once, on request, complete for two
requests at once.

Runs: B, a tiny full fine-tuning (its artifact is the whole encoder, about 90 MB) that finishes first; A, a long
LayerNorm run that trains throughout; C, a tiny run queued behind A. Screenshots go where test_browser's do.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client

from .conftest import TINY, wait_for
from .test_browser import ARGS, CHROMIUM, RUN_T, Console, T, shoot, text_of, wait_text

playwright = pytest.importorskip("playwright.sync_api")

CYCLE_S = 2.2  # one refresh of the Runs tab (its timer ticks every 2 s)


@pytest.fixture(scope="module")
def chromium(app_server):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def new_page(chromium, problems: list):
    page = chromium.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(T)
    console = Console(page)
    console.problems = problems  # one list for every page: the test ends asserting it is empty
    return page


@pytest.fixture(scope="module")
def runs(app_server):
    """B (finished), A (running) and C (queued behind A), submitted through the app's own /submit endpoint."""
    client = Client(app_server.url, verbose=False)

    def submit(**changes) -> int:
        message, ids, *beside = client.predict(**{**TINY, **changes}, api_name="/submit")
        assert len(ids) == 1 and not any(beside), message
        return ids[0]

    def status(run_id) -> str:
        return client.predict(run_id, api_name="/run")["status"]

    b = submit(families=["full"], max_train=16, max_eval=16)
    wait_for(lambda: status(b) in ("succeeded", "failed"), RUN_T / 1000, f"run {b} to finish", app_server, 2)
    assert status(b) == "succeeded", client.predict(b, api_name="/run")["error"]
    a = submit(max_train=2000, max_eval=64, epochs=4, lr=0.02)
    wait_for(lambda: status(a) == "running", RUN_T / 1000, f"run {a} to start", app_server, 1)
    c = submit(seeds="1")
    yield {"A": a, "B": b, "C": c}
    for run_id in (c, a):  # leave the worker idle for the next test file
        if status(run_id) in ("queued", "running"):
            client.predict(run_id, api_name="/cancel")


def pick(page, run_id: int) -> None:
    """Choose a run in the Run dropdown, as a person does."""
    page.locator("#run-select input").click()
    page.get_by_role("option", name=f"#{run_id} ").first.click()


def shows(page, run_id: int, other: int) -> None:
    """The panel is run_id's: the dropdown, the summary, the curves and the config, nothing of `other`."""
    assert page.locator("#run-select input").input_value().startswith(f"#{run_id} ")
    summary = text_of(page, "run-summary")
    assert f"#{run_id} " in summary and f"#{other} " not in summary and "Waiting for a worker" not in summary
    curves = text_of(page, "run-curves")
    assert f"#{run_id} " in curves and f"#{other} " not in curves
    config = "".join(text_of(page, "run-config").split())  # the JSON viewer puts each token on a line
    assert '"max_train":16' in config and '"full"' in config  # B's config (A: 2000 examples of LayerNorms)


def open_config(page) -> None:
    page.locator("#tab-runs").get_by_text("Config", exact=True).click()
    page.wait_for_selector("#run-config :text('max_train')")


def archives(app_server) -> list[Path]:
    """The run archives the server built (app.files.downloads: a per-process folder named by the server's pid)."""
    folders = Path(tempfile.gettempdir()).glob(f"moduletune-downloads-{app_server.proc.pid}-*")
    return sorted(p for f in folders for p in (f / "runs").rglob("*.zip"))


def entries(path: str) -> dict:
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None  # every member reads back with its CRC
        return {i.filename: (i.CRC, i.file_size) for i in z.infolist()}


def test_the_picked_run_stays_while_another_trains(chromium, app_server, runs):
    a, b, c = runs["A"], runs["B"], runs["C"]
    problems: list = []
    page = new_page(chromium, problems)
    page.goto(app_server.url)
    page.get_by_role("tab", name="Runs").click()
    # Nothing picked: the running run (not C, the newest, which waits for a worker).
    wait_text(page, "run-summary", f"Run #{a} ")
    assert "running" in text_of(page, "run-summary") and f"#{c} " not in text_of(page, "run-summary")
    wait_text(page, "runs-table", "queued")
    pick(page, b)
    wait_text(page, "run-summary", f"Run #{b} ")
    open_config(page)
    wait_text(page, "run-curves", f"#{b} ")
    assert page.url.endswith(f"?tab=runs&run={b}")
    steps = []
    for _ in range(3):  # three refresh cycles while A trains: B's panel throughout
        page.wait_for_timeout(CYCLE_S * 1000)
        shows(page, b, a)
        steps.append(app_server.registry().get(a).progress.step)
    assert app_server.registry().get(a).status == "running" and steps[-1] > steps[0]  # A did move meanwhile
    shoot(page, "runs-picked-while-another-trains")
    assert archives(app_server) == []  # all those refreshes built no archive

    # A link opens that tab and that run, even a queued one (the default would be A).
    linked = new_page(chromium, problems)
    linked.goto(f"{app_server.url}/?tab=runs&run={c}")
    wait_text(linked, "run-summary", f"Run #{c} ")
    assert "queued" in text_of(linked, "run-summary")
    linked.wait_for_timeout(2 * CYCLE_S * 1000)  # the live timer runs (the tab was opened by the link)
    assert f"Run #{c} " in text_of(linked, "run-summary") and "queued" in text_of(linked, "runs-table")
    assert linked.locator("#run-select input").input_value().startswith(f"#{c} ")
    shoot(linked, "runs-opened-by-link")
    # Switching tab puts it in the address and keeps the run there.
    linked.get_by_role("tab", name="Experiment").click()
    linked.wait_for_function("() => location.search.includes('tab=experiment')")
    assert f"run={c}" in linked.url
    linked.close()

    # A pick right after opening the tab, before the tab's first refresh answered, is never overwritten.
    quick = new_page(chromium, problems)
    quick.goto(app_server.url)
    quick.get_by_role("tab", name="Runs").click()
    pick(quick, b)
    wait_text(quick, "run-summary", f"Run #{b} ")
    open_config(quick)
    for _ in range(3):
        quick.wait_for_timeout(CYCLE_S * 1000)
        shows(quick, b, a)
    quick.close()
    assert archives(app_server) == []
    page.close()
    assert not problems, problems


def test_two_downloads_at_once_get_one_complete_archive(chromium, app_server, runs, tmp_path):
    b = runs["B"]
    problems: list = []
    pages = [new_page(chromium, problems) for _ in range(2)]
    for page in pages:
        page.goto(f"{app_server.url}/?tab=runs&run={b}")
        wait_text(page, "run-summary", f"Run #{b} ")
        page.locator("#prepare-download").wait_for(state="visible")
    page.wait_for_timeout(2 * CYCLE_S * 1000)
    assert archives(app_server) == [] and not pages[0].locator("#download").is_visible()  # nothing built yet
    started = time.monotonic()
    for page in pages:  # both at once: the second click lands while the first archive is being written
        page.locator("#prepare-download").click()
    files = []
    for i, page in enumerate(pages):
        page.locator("#download").wait_for(state="visible", timeout=RUN_T)
        assert f"run #{b}" in page.locator("#download").inner_text()
        with page.expect_download() as download:
            page.locator("#download").click()
        files.append(tmp_path / f"{i}-{download.value.suggested_filename}")
        download.value.save_as(files[-1])
    print(f"two prepared downloads of run {b} in {time.monotonic() - started:.1f}s")
    shoot(pages[0], "runs-download-ready")
    first, second = entries(str(files[0])), entries(str(files[1]))
    assert first == second and files[0].read_bytes() == files[1].read_bytes()
    assert files[0].name.endswith(f"moduletune-run-{b}.zip")
    artifact = Path(app_server.registry().get(b).artifact_dir)
    assert {name: size for name, (_, size) in first.items()} == {
        p.relative_to(artifact).as_posix(): p.stat().st_size for p in artifact.rglob("*") if p.is_file()
    }
    assert first["trained.safetensors"][1] > 50_000_000  # the whole encoder: what collided before
    built = archives(app_server)
    assert len(built) == 1 and not list(built[0].parent.glob("*.part"))  # built once, no half file left
    for page in pages:
        page.wait_for_timeout(CYCLE_S * 1000)
        assert page.locator("#download").is_visible()  # a refresh keeps the prepared file on offer
        page.close()
    assert archives(app_server) == built and not problems, problems
