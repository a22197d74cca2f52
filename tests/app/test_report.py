"""`moduletune report` on a small real study: 2 tasks x 3 families x 2 seeds trained by a real worker, four formats."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from moduletune.tasks.registry import Registry

# The queue's fixtures (real workers, the CLI in a subprocess) live with the tasks tests; this test reads the report.
from tests.tasks.conftest import cli, cli_json, env, wait_for, workers  # noqa: F401  (env, workers: fixtures)

SMALL = ["--max-train", "48", "--max-eval", "48", "--batch-size", "16", "--max-seq-len", "48", "--device", "cpu"]


@pytest.mark.study  # a real (small) study through workers: a minute, with the science checks (make test-study)
def test_report_of_a_small_real_study_in_every_format(env, workers, tmp_path):  # noqa: F811  (the fixtures above)
    sweep = cli_json(
        "sweep", "--tasks", "rte,sst2", "--modules", "LN,Q,full", "--layers", "all", "--seeds", "0,1", *SMALL
    )
    assert sweep["queued"] == 2 * 3 * 2
    workers.start("--workers", "1")
    reg = Registry()
    wait_for(
        lambda: all(reg.get(i).status in ("succeeded", "failed") for i in sweep["ids"]),
        600,
        "the study's 12 runs",
        pool=workers,
    )
    assert {reg.get(i).status for i in sweep["ids"]} == {"succeeded"}

    out = {fmt: tmp_path / f"study.{fmt}" for fmt in ("md", "tex", "csv", "html")}
    for fmt, path in out.items():
        assert "12 runs" in cli("report", "--format", fmt, "--output", str(path), timeout=300).stdout

    numeric = pd.read_csv(io.StringIO(out["csv"].read_text()))
    assert set(numeric["task"]) == {"rte", "sst2"} and set(numeric["module"]) == {"LN", "Q", "full"}
    assert set(numeric["n"]) == {2}  # two seeds pooled per cell, nothing else
    # Every cell has its chance level, and its full fine-tuning reference or (48 examples are too few for full
    # fine-tuning to learn) the flag that full fine-tuning ran and did not learn: never a reference from such a run.
    assert numeric["chance"].notna().all()
    assert (numeric["full_mean"].notna() ^ numeric["full_failed"].astype(bool)).all()
    md = out["md"].read_text()
    assert "| module |" in md and "± " in md and "(2)" in md and "chance" in md and "Spearman" in md
    assert "full fine-tuning did not learn" in md or not numeric["full_failed"].astype(bool).any()
    tex = out["tex"].read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "\\toprule" in tex
    html = out["html"].read_text()
    assert html.count("Plotly.newPlot") >= 3 and "cdn.plot.ly" not in html and "<script src=" not in html
    assert "2302.00378" in html and "rte" in html and "sst2" in html and "Spearman" in html

    refused = cli("report", "--tasks", "cola", "--format", "md", "--output", str(tmp_path / "none.md"), check=False)
    assert refused.returncode == 2 and "no finished runs to report for cola" in refused.stderr
    assert not (tmp_path / "none.md").exists()
