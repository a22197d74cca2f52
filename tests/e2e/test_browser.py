"""A real browser (Debian's chromium, headless, driven by Playwright) clicking through every tab of the launched app.

Screenshots of each tab go to <repo>/screenshots/ (git-ignored) and are copied to /tmp/moduletune-screens/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import polling

from .conftest import REPO

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = REPO / "screenshots"
COPY = Path("/tmp/moduletune-screens")
T = 60_000  # ms: the default wait for one UI update on a busy machine
RUN_T = 240_000  # ms: a tiny run from click to "succeeded"


class Console:
    """What the page logs as an error or a warning (and every uncaught exception), outside page reloads: a
    reload aborts the requests in flight, and the browser says so, which is no fault of the app's."""

    def __init__(self, page):
        self.page, self.problems, self.reloading = page, [], False
        page.on("console", self.on_console)
        page.on("pageerror", lambda err: self.problems.append(f"uncaught: {err}"))

    def on_console(self, msg) -> None:
        if msg.type in ("error", "warning") and not self.reloading:
            self.problems.append(f"{msg.type}: {msg.text}")

    def reload(self) -> None:
        self.goto(None)

    def goto(self, url: str | None) -> None:
        """Open url (None: reload), not counting what the page that is left logs about its aborted requests."""
        self.reloading = True
        try:
            self.page.reload() if url is None else self.page.goto(url)
            self.page.wait_for_load_state("load")
            self.page.wait_for_timeout(1500)  # the aborted requests' messages arrive after the load event
        finally:
            self.reloading = False


@pytest.fixture(scope="module")
def browser(app_server):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser):
    # 1,280 px: the width of a laptop's window, where the preview table must fit.
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(T)
    yield page
    page.close()


@pytest.fixture(scope="module")
def console(page):
    return Console(page)


def shoot(page, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    COPY.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shutil.copy(path, COPY / path.name)
    return path


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def wait_text(page, elem_id: str, needle: str, timeout: int = T) -> None:
    page.wait_for_function(
        "([id, needle]) => { const e = document.getElementById(id); return e && e.innerText.includes(needle); }",
        arg=[elem_id, needle],
        timeout=timeout,
    )


def wait_empty(page, elem_id: str) -> None:
    page.wait_for_function(
        "id => { const e = document.getElementById(id); return e && !e.innerText.trim(); }", arg=elem_id
    )


def fill(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id}").locator("input, textarea").first
    box.fill(value)
    box.press("Tab")


def wait_rows(page, elem_id: str, n: int) -> None:
    """Until the table shows n rows, counted by their first cells (cell-<row>-0): Gradio 6 keeps no tr per row."""
    page.wait_for_function(
        "([id, n]) => [...document.querySelectorAll(`#${id} [role=gridcell]`)]"
        ".filter(c => /^cell-\\d+-0$/.test(c.dataset.testid || '')).length === n",
        arg=[elem_id, n],
    )


def plots(page, elem_id: str) -> int:
    return page.locator(f"#{elem_id} .js-plotly-plot").count()


@pytest.fixture
def own_page(browser):
    """A page in its own browser context: its kept form (localStorage) is nobody else's."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(T)
    yield page
    context.close()


def test_a_wrong_value_is_named_beside_its_field_and_a_reload_keeps_the_form(own_page, app_server):
    """A negative training-example count: the message beside that box alone, no promise of runs, nothing queued,
    no traceback in the server's log. Then a filled form survives a reload (the browser keeps it)."""
    page, console = own_page, Console(own_page)
    registry = app_server.registry()
    console.goto(app_server.url)
    wait_text(page, "preview", "will be queued")
    before, log_before = registry.count(), len(app_server.logs(10**7))

    fill(page, "max-train", "-5")
    wait_text(page, "max-train-msg", "must be a whole number from 0")
    assert "will be queued" not in text_of(page, "preview") and "Nothing to queue yet" in text_of(page, "preview")
    others = [e for e in ("tasks-msg", "families-msg", "layers-msg", "lr-msg", "seeds-msg", "max-eval-msg")]
    assert not any(text_of(page, e).strip() for e in others)
    page.locator("#submit").click()
    wait_text(page, "submit-msg", "Nothing was queued: fix the training examples")
    assert registry.count() == before
    assert page.locator(".toast-body").count() == 0  # no Gradio toast naming no field
    shoot(page, "experiment-negative-examples")
    assert "Traceback" not in app_server.logs(10**7)[log_before:]

    # Fill the form, reload: the values are back (and the preview follows them), and the page then stays quiet.
    sent = []
    page.on("request", lambda r: sent.append(r.url) if "queue/join" in r.url else None)
    fill(page, "max-train", "48")
    fill(page, "seeds", "0,1")
    page.locator("#families label", has_text="Q · attention query").click()
    wait_text(page, "preview", "4 runs will be queued")
    page.wait_for_timeout(1500)  # the browser keeps the form on each change
    console.reload()
    wait_text(page, "preview", "4 runs will be queued")
    assert page.locator("#max-train input").first.input_value() == "48"
    assert page.locator("#seeds textarea, #seeds input").first.input_value() == "0,1"
    assert page.locator("#families input:checked").count() == 2
    page.wait_for_timeout(3000)
    idle = len(sent)
    page.wait_for_timeout(5000)  # restoring a value a control already held made Gradio re-send the form forever
    assert len(sent) == idle, f"the restored form sent {len(sent) - idle} events in 5 s while nobody touched it"

    # The command equal to the form, ready to copy.
    page.locator("#command-box").get_by_text("Show the command").click()
    wait_text(page, "command", "moduletune sweep --tasks sst2 --modules layernorm,query --layers all --seeds 0,1")
    assert "--max-train 48" in text_of(page, "command")
    shoot(page, "experiment-command")
    # One click ticks the paper's seven families for the preset.
    page.locator("#paper-families").click()
    page.wait_for_function("() => document.querySelectorAll('#families input:checked').length === 7")
    assert not console.problems, console.problems


def test_a_restored_value_is_checked_like_a_typed_one(own_page, app_server):
    """2.5 training examples, kept by the browser: after a reload the box holds 2.5 again with its message beside
    it, never a valid 2 and a promise of runs."""
    page, console = own_page, Console(own_page)
    console.goto(app_server.url)
    wait_text(page, "preview", "will be queued")
    fill(page, "max-train", "2.5")
    wait_text(page, "max-train-msg", "must be a whole number from 0")
    page.wait_for_timeout(1500)  # the browser keeps the form on each change
    console.reload()
    wait_text(page, "max-train-msg", "must be a whole number from 0")
    assert page.locator("#max-train input").first.input_value() == "2.5"
    assert "will be queued" not in text_of(page, "preview")
    assert not console.problems, console.problems


def test_every_tab_by_clicking(page, console, app_server, tmp_path):
    registry = app_server.registry()
    sent = []  # the events the page sends (Gradio's queue/join requests): a quiet form sends none
    page.on("request", lambda r: sent.append(r.url) if "queue/join" in r.url else None)
    console.goto(app_server.url)
    for tab in ("Experiment", "Runs", "Compare", "Study", "Weights", "Playground"):
        page.get_by_role("tab", name=tab).wait_for(state="visible")
    wait_text(page, "preview", "will be queued")
    assert "default for LN: 1e-2" in text_of(page, "tab-experiment")
    before = registry.count()

    # The layer toggles follow the model: a local 2-layer BERT (config only), then back to the embedded MiniLM.
    from tests.app.test_experiment import two_layer_model

    toggles = page.locator("#layers input[type=checkbox]")
    assert toggles.count() == 6
    fill(page, "model", two_layer_model(tmp_path / "tiny-bert"))
    page.wait_for_function("() => document.querySelectorAll('#layers input[type=checkbox]').length === 2")
    wait_text(page, "preview", "2 layers")
    fill(page, "model", "all-MiniLM-L6-v2")
    page.wait_for_function("() => document.querySelectorAll('#layers input[type=checkbox]').length === 6")
    wait_text(page, "preview", "6 layers")
    page.wait_for_timeout(3000)  # what the edits sent has arrived; from now on the form is idle
    before_idle = len(sent)
    page.wait_for_timeout(5000)
    assert len(sent) == before_idle, f"the idle form sent {len(sent) - before_idle} events in 5 s (a loop)"

    # A bad layer selection: the message beside the layers control, and nothing is queued.
    page.locator("#layers-none").click()
    wait_text(page, "layers-msg", "Pick at least one layer")
    page.locator("#submit").click()
    wait_text(page, "submit-msg", "Nothing was queued")
    fill(page, "layer-spec", "9")
    wait_text(page, "layers-msg", "out of range")
    assert "this model has layers 0-5" in text_of(page, "layers-msg")
    shoot(page, "experiment-bad-layers")
    assert registry.count() == before

    # The paper-study preset studies the families ticked (here LayerNorm) and asks first, with the full study's
    # and the quick size's counts; cancelling queues nothing.
    page.locator("#paper-study").click()
    wait_text(page, "paper-msg", "8 lr searches, then 8 runs")
    assert page.locator("#paper-confirm").inner_text() == "Yes, queue the full study (8 searches)"
    assert page.locator("#paper-quick").inner_text() == "Queue the quick size (3 searches)"
    page.locator("#paper-cancel").click()
    wait_empty(page, "paper-msg")
    assert not page.locator("#paper-confirm").is_visible() and registry.count() == before

    # An open offer follows the form (the count confirmed is the count queued), and confirming queues one study.
    page.locator("#paper-study").click()
    wait_text(page, "paper-msg", "then 8 runs")
    fill(page, "seeds", "0,1")
    wait_text(page, "paper-msg", "8 lr searches, then 16 runs")
    shoot(page, "experiment-paper-offer")
    page.locator("#paper-confirm").click()
    wait_text(page, "submit-msg", "Queued 8 lr searches")
    queued = [r for r in registry.list_runs() if r.sweep_id and r.sweep_id.startswith("paper-")]
    assert len(queued) == 8 and {r.kind for r in queued} == {"search"}
    assert {tuple(registry.get(r.id).config_data["extra"]["final_seeds"]) for r in queued} == {(0, 1)}
    (study_id,) = {r.study_id for r in queued}
    assert f"study #{study_id}" in text_of(page, "submit-msg")
    assert not page.locator("#paper-confirm").is_visible()

    # The Study tab: the study's progress; Cancel asks first, then cancels every queued run of it in one go.
    page.get_by_role("tab", name="Study").click()
    wait_text(page, "studies-table", "paper preset")
    page.locator('#studies-table [role=gridcell][data-testid="cell-0-0"]').click()
    wait_text(page, "study-progress", f"Study #{study_id}")
    wait_text(page, "study-progress", "0/16")
    wait_text(page, "study-table", "pending")
    shoot(page, "study")
    page.locator("#study-cancel").click()
    wait_text(page, "study-cancel-text", "never start")
    page.locator("#study-cancel-confirm").click()
    wait_text(page, "study-action-msg", f"Study #{study_id} cancelled")
    page.wait_for_function("() => !document.body.innerText.includes('queued runs never start')")
    assert not [r for r in registry.list_runs(study_id=study_id) if r.status == "queued"]
    polling.wait_for(
        lambda: registry.study(study_id).status == "cancelled", RUN_T / 1000, "the study's running search to stop"
    )
    # The address keeps the study: a reload opens it again.
    page.wait_for_function("(id) => location.search.includes('study=' + id)", arg=str(study_id))
    console.reload()
    wait_text(page, "study-progress", f"Study #{study_id}")
    wait_text(page, "study-progress", "cancelled")
    assert "tab=study" in page.url
    shoot(page, "study-cancelled")
    page.get_by_role("tab", name="Experiment").click()
    # The reload gave the kept form back (its restore runs on load): wait for it before editing on.
    page.wait_for_function(
        "() => (document.querySelector('#layer-spec input, #layer-spec textarea') || {}).value === '9'"
    )
    wait_text(page, "layers-msg", "out of range")
    fill(page, "seeds", "0")
    before = registry.count()

    # A good one: the last layer, a quick subsample, then Queue runs.
    fill(page, "layer-spec", "")
    fill(page, "layers-k", "1")
    page.locator("#layers-last").click()
    wait_empty(page, "layers-msg")
    fill(page, "max-train", "32")
    fill(page, "max-eval", "32")
    page.get_by_text("More settings", exact=True).click()
    fill(page, "batch-size", "16")
    page.locator("#prefix-cache label", has_text="on").click()
    wait_text(page, "preview", "1 run will be queued")
    wait_empty(page, "submit-msg")  # the earlier error went stale with the edits
    page.wait_for_timeout(1500)  # let the preview settle before the screenshot
    shoot(page, "experiment")
    page.locator("#submit").click()
    wait_text(page, "submit-msg", "Queued run")
    assert registry.count() == before + 1
    run = registry.list_runs(limit=1)[0]
    assert (run.layers, run.family, run.config_data or None) == ("5", "LN", None)
    assert registry.get(run.id).config_data["max_train"] == 32
    assert registry.get(run.id).config_data["prefix_cache"] == "on"
    run_id = run.id

    # Runs: the table and the newest run's live summary follow it to the end (the 2 s timer).
    page.get_by_role("tab", name="Runs").click()
    wait_text(page, "runs-table", "sst2")
    wait_text(page, "run-summary", f"Run #{run_id}")
    wait_text(page, "run-summary", "succeeded", timeout=RUN_T)
    page.wait_for_selector("#run-curves .js-plotly-plot")
    wait_text(page, "worker-status", "embedded worker running")
    assert page.locator("#prepare-download").is_visible()  # the archive is built when asked for, not on refresh
    shoot(page, "runs")

    # Tags and a note on the run, saved to the registry, then found by the search box's tag:NAME.
    page.locator("#run-tools").get_by_text("Tags, note, export and data").click()
    fill(page, "run-tags", "baseline, LN-only")
    fill(page, "run-note", "the walk-through's run")
    page.locator("#save-labels").click()
    wait_text(page, "run-action-msg", "tags baseline, ln-only; note saved")
    assert registry.get(run_id).tags == ["baseline", "ln-only"]
    assert registry.get(run_id).note == "the walk-through's run"
    fill(page, "runs-search", "tag:ln-only")
    wait_rows(page, "runs-table", 1)
    wait_text(page, "runs-table", str(run_id))
    shoot(page, "runs-tags")
    fill(page, "runs-search", "")

    # The study is one row until it is unfolded; then clicking one of its rows shows that run.
    runs = registry.list_runs()  # newest first, like the table
    wait_text(page, "runs-table", f"S{study_id}")
    # One row per run of its own and one per study (the cleared search box refills the table; other test files
    # share this app, so their runs are rows too); the study is the second newest.
    top = [r for r in runs if r.parent_id is None and r.study_id is None]
    studies = {r.study_id for r in runs if r.study_id is not None}
    wait_rows(page, "runs-table", len(top) + len(studies))
    study_row = page.locator('#runs-table [role=gridcell][data-testid="cell-1-0"]')
    assert study_row.inner_text().strip() == f"S{study_id}"
    study_row.click()  # unfold it: its 8 searches come in under it
    wait_rows(page, "runs-table", len(top) + len(studies) + 8)
    page.locator('#runs-table [role=gridcell][data-testid="cell-2-0"]').click()  # its newest (cancelled) search
    wait_text(page, "run-summary", f"lr search #{runs[1].id}")

    # Reloading the page never affects a run, and keeps your place: the tab and the picked run are in the URL.
    page.wait_for_function("(id) => location.search.includes('run=' + id)", arg=str(runs[1].id))
    console.reload()
    wait_text(page, "run-summary", f"lr search #{runs[1].id}")
    assert "tab=runs" in page.url and f"run={runs[1].id}" in page.url
    page.locator("#run-select input").click()
    page.get_by_role("option", name=f"#{run_id} ").first.click()
    wait_text(page, "run-summary", f"Run #{run_id}")
    assert "succeeded" in text_of(page, "run-summary")

    # Compare: every chart renders as Plotly, with this run's point on the frontier.
    page.get_by_role("tab", name="Compare").click()
    for chart in ("chart-score", "chart-frontier", "chart-heatmap", "chart-curves"):
        page.wait_for_selector(f"#{chart} .js-plotly-plot")
    page.wait_for_selector("#chart-frontier .scatterlayer .point")
    wait_text(page, "results-note", "try 5")  # the table is per layer choice: 'all' is empty, '5' has the run
    assert plots(page, "tab-compare") >= 4
    shoot(page, "compare")

    # Weights: magnitudes of the embedded model, and how far this run moved its LayerNorms.
    page.get_by_role("tab", name="Weights").click()
    page.wait_for_selector("#chart-magnitudes .js-plotly-plot")
    wait_text(page, "chart-magnitude-heatmap", "Mean |weight|")
    wait_text(page, "chart-magnitudes", "LN")
    page.locator("#weights-runs input").click()
    page.get_by_role("option", name=f"#{run_id} ").first.click()
    page.keyboard.press("Escape")
    page.locator("#deltas-go").click()
    page.wait_for_selector("#chart-deltas .scatterlayer .trace")
    assert plots(page, "tab-weights") >= 3
    shoot(page, "weights")

    # Study: the paper's findings from the registry, with its four downloads.
    page.get_by_role("tab", name="Study").click()
    page.locator("#study-go").click()
    wait_text(page, "study-summary", "finished runs", timeout=RUN_T)
    wait_text(page, "study-table", "chance")
    for chart in ("chart-layerwise", "chart-study-frontier", "chart-magnitude-score"):
        page.wait_for_selector(f"#{chart} .js-plotly-plot")
    shoot(page, "study")
    wait_text(page, "study-files", "moduletune-study")
    assert all(ext in text_of(page, "study-files") for ext in (".csv", ".md", ".tex", ".html"))

    # Playground: the tuned run next to the untuned model.
    page.get_by_role("tab", name="Playground").click()
    wait_text(page, "play-msg", "sst2")
    fill(page, "play-text-a", "A wonderful, moving film.")
    page.locator("#play-go").click()
    wait_text(page, "play-msg", "Tuned:")
    assert "positive" in text_of(page, "play-tuned") and "positive" in text_of(page, "play-base")
    page.wait_for_timeout(1000)  # let the labels finish fading in before the screenshot
    shoot(page, "playground")
    # The whole walk-through logged no error or warning in the browser's console.
    assert not console.problems, console.problems
    assert {p.name for p in COPY.glob("*.png")} >= {
        "experiment.png",
        "experiment-bad-layers.png",
        "runs.png",
        "compare.png",
        "study.png",
        "weights.png",
        "playground.png",
    }


def test_a_lora_run_from_the_form_sits_on_the_frontier_against_params_or_time(page, console, app_server):
    """The method choice: LoRA cannot wrap LayerNorm (said beside the families); LoRA on the last layer's query is
    counted, queued, trained, and drawn on Compare's frontier, which can be redrawn against training time."""
    registry = app_server.registry()
    console.goto(app_server.url)
    wait_text(page, "preview", "will be queued")
    page.locator("#families label", has_text="LN · LayerNorms").click()  # untick the default
    page.locator("#families label", has_text="Q · attention query").click()
    page.locator("#families label", has_text="LN · LayerNorms").click()  # and tick it again, with a method:
    page.locator("#method label", has_text="lora").click()
    wait_text(page, "families-msg", "LoRA wraps the nn.Linear modules")
    page.locator("#families label", has_text="LN · LayerNorms").click()
    wait_empty(page, "families-msg")
    fill(page, "layer-spec", "5")
    fill(page, "max-train", "32")
    fill(page, "max-eval", "32")
    wait_text(page, "preview", "6,144")  # rank 8 x (384 + 384) on one query
    wait_text(page, "tab-experiment", "default for lora:Q: 3e-3")
    before = registry.count()
    page.locator("#submit").click()
    wait_text(page, "submit-msg", "Queued run")
    run = registry.list_runs(limit=1)[0]
    assert registry.count() == before + 1 and registry.get(run.id).config_data["modules"] == ["lora:query"]
    polling.wait_for(lambda: registry.get(run.id).status == "succeeded", RUN_T / 1000, "the LoRA run")

    page.get_by_role("tab", name="Compare").click()
    page.wait_for_selector("#chart-frontier .js-plotly-plot")
    wait_text(page, "chart-frontier", "lora:Q")
    page.locator("#frontier-cost label", has_text="training time").click()
    wait_text(page, "chart-frontier", "score vs training time")
    shoot(page, "compare-frontier-time")
    assert not console.problems, console.problems
