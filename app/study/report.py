"""The paper's findings regenerated from the registry: its results table, the layer-wise and efficiency figures
and the weight-magnitude vs score correlation, exported as CSV, Markdown, LaTeX or one self-contained HTML file.

Pure functions of DataFrames (the registry's runs frame, tuning.magnitudes rows without 'hist') built on
app.figures.pooling, app.figures.tables and app.study.analysis (the per-task figures and statistics), so the
study is unit tested on hand-built frames; only report_from_registry reads a registry and loads models.
Akbar-Tajari, Rajaee & Pilehvar, EMNLP 2022, arXiv 2302.00378.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from moduletune.app.figures import pooling, tables
from moduletune.app.figures.labels import canonical_modules, task_sort_key
from moduletune.app.study.analysis import (
    efficiency_figure,
    layerwise_figure,
    magnitude_points,
    magnitude_vs_score,
    rho_text,
)
from moduletune.tuning.finals import final_layers
from moduletune.tuning.models import ModelError

PAPER = (
    'Akbar-Tajari, Rajaee & Pilehvar, "An Empirical Study on the Transferability of Transformer Modules in '
    'Parameter-Efficient Fine-Tuning" (EMNLP 2022, arXiv 2302.00378)'
)
PAPER_URL = "https://arxiv.org/abs/2302.00378"
TITLE = "Module tuning study"
INTRO = (
    "Each module family of the encoder fine-tuned alone, the rest frozen, reproducing " + PAPER + ". "
    "The paper finds that every module tuned alone comes close to full fine-tuning, that LayerNorms do best "
    "per trained parameter, and ties that to LayerNorms' far larger weight magnitudes."
)
POOLING_NOTE = (
    "Runs are pooled over seeds only: each cell is mean ± std (n seeds) of runs whose settings differ "
    "in the seed alone; ✗ marks replicate sets that did not learn (constant predictions or within noise "
    "of chance). Chance is the majority class of the evaluation set (0 for MCC and correlations)."
)
FORMATS = ("csv", "md", "tex", "html")
FIGURES = ("layerwise", "efficiency", "magnitude")


# ---------------------------------------------------------------- selection


def _of_tasks(runs, tasks) -> pd.DataFrame:
    """The runs of these tasks (every task for None): what each part of the study reads."""
    runs = pooling.frame(runs)
    if tasks is None or runs.empty or "task" not in runs.columns:
        return runs
    return runs[runs["task"].isin(_task_list(tasks))]


def _task_list(tasks) -> list[str]:
    """Tasks as a list in GLUE order, whether given as one name or several."""
    return sorted(dict.fromkeys([tasks] if isinstance(tasks, str) else tasks), key=task_sort_key)


# ---------------------------------------------------------------- 1. the table


def study_numeric(runs, tasks=None, layers: str | None = "all", model: str | None = None) -> pd.DataFrame:
    """The study's long numeric form (family, module, variant, task, metric, mean, std, n, trainable_pct, lr,
    chance, full_mean, did_not_learn), one row per replicate set and task: the CSV export."""
    return tables.results_table_numeric(_of_tasks(runs, tasks), layers, model)


def study_table(runs, tasks=None, layers: str | None = "all", model: str | None = None, planned=None) -> pd.DataFrame:
    """The paper's table: module families in paper order (then combos, random controls, full fine-tuning) ×
    tasks as 'mean ± std (n)' (✗: did not learn), with trainable % and lr, closed by the chance row; planned: a
    study's cells still to come (planned_cells), which read 'pending' instead of blank."""
    return tables.results_table(_of_tasks(runs, tasks), layers, model, _of_tasks(planned, tasks))


# What a planned cell says before a finished run fills it, by the status of what will fill it.
PENDING_TEXT = {"queued": "pending", "running": "pending", "interrupted": "pending"}


def planned_cells(registry, study_id: int) -> pd.DataFrame:
    """The cells a study's runs will fill (task, family, layers, text): each run and each unfinished search's
    layer choices, saying 'pending' while queued or running (a search: 'pending (searching)'), else its status
    (failed, cancelled). A run retried by another speaks through the retry."""
    rows = [r for r in registry.list_runs(study_id=study_id) if r.kind != "candidate"]
    retried = {r.retry_of for r in rows if r.retry_of is not None}
    cells = []
    for r in rows:
        if r.id in retried or r.status == "succeeded":
            continue  # a finished run fills its cell with its score; a finished search's runs are rows of their own
        text = PENDING_TEXT.get(r.status, r.status)
        layers = [str(r.layers)]
        if r.kind == "search":
            text = "pending (searching)" if text == "pending" else f"{text} (its lr search)"
            layers = final_layers(registry.get(r.id).config)
        family = canonical_modules(r.modules)
        cells += [(r.task, family, spec, text) for spec in layers]
    cells.sort(key=lambda c: c[3] != "pending")  # a pending retry wins over the failure it retries
    frame = pd.DataFrame(cells, columns=["task", "family", "layers", "text"])
    return frame.drop_duplicates(["task", "family", "layers"])


# ---------------------------------------------------------------- 2. the report


@dataclass
class Report:
    """Everything the study shows, computed once from the registry; the exports only render it."""

    table: pd.DataFrame  # display table (study_table)
    numeric: pd.DataFrame  # long numeric form (study_numeric)
    tasks: list[str]
    figures: dict[str, dict[str, go.Figure]]  # task -> {"layerwise", "efficiency", "magnitude"}
    rho: dict[str, dict]  # task -> {"rho", "p", "n_families", "model"}
    points: dict[str, pd.DataFrame]  # task -> magnitude_points
    mixed_settings: list[str]  # settings the pooled runs differ in beyond task, modules and layers
    n_runs: int
    generated_at: str
    layers: str = "all"
    notes: list[str] = field(default_factory=list)


def _magnitude_model(d: pd.DataFrame, task: str, available, model: str | None) -> str | None:
    """The model whose magnitudes a task's correlation uses: the given one, else its most used with magnitudes."""
    if model is not None:
        return model if model in available else None
    used = d.loc[d["task"] == task, "model"].value_counts().index if "model" in d.columns else []
    return next((m for m in used if m in available), None)


def build_report(
    runs,
    magnitudes_by_model: dict[str, pd.DataFrame] | None = None,
    tasks=None,
    layers: str | None = "all",
    model: str | None = None,
    planned=None,
) -> Report:
    """The whole study from a runs frame and per-model magnitude rows: table, per-task figures and rho.

    layers is the table's layer choice (None: every choice, each its own row); |w| vs score always compares
    runs over all layers (or `layers` when one is given), as the paper does. planned: a study's cells still to
    come (planned_cells), shown as pending."""
    runs = _of_tasks(runs, tasks)
    table_layers, layers = layers, layers or "all"
    d = pooling.finished_runs(runs, None, model)
    mags = magnitudes_by_model or {}
    planned = pooling.frame(planned)
    found = list(d["task"].unique()) + (list(planned["task"].unique()) if not planned.empty else [])
    task_names = _task_list(tasks) if tasks is not None else _task_list(found)
    figures, rho, points = {}, {}, {}
    for t in task_names:
        used = _magnitude_model(d, t, mags, model)
        magnitudes = mags.get(used) if used else None
        fig, stats = magnitude_vs_score(runs, magnitudes, t, layers, model=used or model)
        figures[t] = {
            "layerwise": layerwise_figure(runs, t, model),
            "efficiency": efficiency_figure(runs, t, model),
            "magnitude": fig,
        }
        rho[t] = {**stats, "model": used}
        points[t] = magnitude_points(runs, magnitudes, t, layers, used or model)
    table = study_table(runs, None, table_layers, model, planned)
    notes = [tables.VERDICT_LEGEND] if table.map(lambda v: isinstance(v, str) and _marked(v)).to_numpy().any() else []
    return Report(
        table=table,
        numeric=study_numeric(runs, None, table_layers, model),
        tasks=task_names,
        figures=figures,
        rho=rho,
        points=points,
        mixed_settings=pooling.mixed_settings(d),
        n_runs=len(d),
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        layers=table_layers or "every layer choice, each its own row",
        notes=notes,
    )


def _marked(cell: str) -> bool:
    """Whether a table cell carries an lr search's verdict mark (tables.VERDICT_MARKS) or says none learned."""
    return cell.endswith(tuple(tables.VERDICT_MARKS.values())) or cell.startswith(tables.NO_LEARNER_CELL)


# ---------------------------------------------------------------- 3. exports


def summary_lines(report: Report) -> list[str]:
    """The lines every export states beside the numbers: source, pooling, layers and what was mixed."""
    mixed = ", ".join(report.mixed_settings) or "nothing (every row at the same settings)"
    return [
        f"Generated {report.generated_at} from {report.n_runs} finished runs on "
        f"{', '.join(report.tasks) or 'no tasks'}.",
        f"Layers: {report.layers} (embeddings, classifier and full fine-tuning ignore the layer choice).",
        f"Settings that differ between rows (each variant is its own row): {mixed}.",
        *report.notes,
    ]


def findings(report: Report) -> list[str]:
    """One line per task: the rank correlation of a family's mean |w| with its score."""
    lines = []
    for t in report.tasks:
        stats = report.rho.get(t, {})
        model = stats.get("model")
        source = f"magnitudes of {model}" if model else "no magnitudes for its model"
        if stats.get("p_method"):
            source += f"; {stats['p_method']} p"
        lines.append(f"{t}: {rho_text(stats)} between a family's mean |w| and its score ({source}).")
    return lines


def to_csv(report: Report) -> str:
    """The numeric long form as CSV text."""
    return report.numeric.to_csv(index=False)


def _pipe_table(df: pd.DataFrame) -> str:
    """A Markdown pipe table (tabulate, which DataFrame.to_markdown needs, is not a dependency)."""
    cell = lambda v: str(v).replace("|", r"\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |", "|" + " --- |" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False, name=None)]
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    """The study as Markdown: title, the paper, the table and the magnitude findings."""
    parts = [
        f"# {TITLE}",
        INTRO,
        "\n".join(f"- {line}" for line in summary_lines(report)),
        "## Results",
        POOLING_NOTE,
        _pipe_table(report.table),
        "## Weight magnitude vs score",
        "\n".join(f"- {line}" for line in findings(report)),
    ]
    return "\n\n".join(parts) + "\n"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "✗": r"$\times$",
    "—": "---",
    "·": r"$\cdot$",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX))


def _latex_escape(value) -> str:
    """Text safe in a LaTeX cell: specials escaped, ± as $\\pm$, ✗ as $\\times$ (pdflatex has neither glyph)."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group(0)], str(value))


def to_latex(report: Report) -> str:
    """The table as a booktabs tabular (needs \\usepackage{booktabs}), with the source as comment lines."""
    table = report.table.map(_latex_escape).rename(columns=_latex_escape)
    body = table.to_latex(index=False, escape=False, column_format="l" + "r" * (table.shape[1] - 1))
    comments = [
        f"% {TITLE}: {PAPER}",
        *(f"% {line}" for line in summary_lines(report)),
        r"% mean $\pm$ std (n seeds); $\times$: did not learn. Needs \usepackage{booktabs}.",
    ]
    return "\n".join(comments) + "\n" + body


def _plotly_js() -> str:
    """plotly.js for inlining; its one URL (the topojson default, used only by geo maps, which a report never
    draws) is pointed at a relative folder so the file is provably offline."""
    from plotly.offline import get_plotlyjs

    return re.sub(r"https?://cdn\.plot\.ly/[^\"']*", "topojson/", get_plotlyjs())


STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222}table.study{border-collapse:collapse;font-size:14px;margin:1em 0}
table.study th,table.study td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
table.study th:first-child,table.study td:first-child{text-align:left}.note{color:#555;font-size:14px}"""


def _figure_html(fig: go.Figure) -> str:
    """One figure as a div that uses the page's single inlined plotly.js."""
    return fig.to_html(
        full_html=False, include_plotlyjs=False, default_width="100%", config={"displaylogo": False, "responsive": True}
    )


def to_html(report: Report) -> str:
    """One self-contained HTML file (plotly.js inlined once, no network to view): the paper, the table, each
    task's figures and the magnitude findings."""
    esc = html.escape
    items = lambda lines: "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>"  # noqa: E731
    sections = []
    for t in report.tasks:
        figs = report.figures.get(t, {})
        sections.append(f"<h2>{esc(t)}</h2>" + "".join(_figure_html(figs[k]) for k in FIGURES if k in figs))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(TITLE)}</title><style>{STYLE}</style>",
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>",
            f'<script type="text/javascript">{_plotly_js()}</script></head><body>',
            f"<h1>{esc(TITLE)}</h1>",
            f'<p>{esc(INTRO)} <a href="{PAPER_URL}">arXiv 2302.00378</a></p>',
            items(summary_lines(report)),
            "<h2>Results</h2>",
            f'<p class="note">{esc(POOLING_NOTE)}</p>',
            report.table.to_html(index=False, classes="study", border=0, na_rep=""),
            "<h2>Weight magnitude vs score</h2>",
            items(findings(report)),
            *sections,
            "</body></html>",
        ]
    )


RENDERERS = {"csv": to_csv, "md": to_markdown, "tex": to_latex, "html": to_html}


def render(report: Report, fmt: str) -> str:
    """The report as text in one of FORMATS; an unknown format is refused with the allowed ones."""
    key = str(fmt).strip().lower().lstrip(".")
    if key not in RENDERERS:
        raise ValueError(f"unknown report format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return RENDERERS[key](report)


def write_report(report: Report, fmt: str, path) -> Path:
    """Render the report in `fmt` (csv, md, tex or html) and write it to `path` as UTF-8."""
    text = render(report, fmt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- 4. from a registry


def model_magnitudes(name: str) -> pd.DataFrame:
    """A model's magnitude rows (the Weights tab's, computed once per model and shared with it)."""
    from moduletune.app.weights.models import magnitudes

    return magnitudes(name).copy()


def report_from_registry(
    registry, tasks=None, model: str | None = None, layers: str | None = None, study_id: int | None = None
) -> Report:
    """The study of every finished run in a registry (optionally some tasks or one model; or one study's runs,
    with its cells still to come as pending), with the magnitudes of each model the runs used; a model that cannot
    be loaded leaves its correlation out and says why."""

    runs = registry.runs_frame(study_id=study_id)
    d = pooling.finished_runs(_of_tasks(runs, tasks), None, model)
    mags, notes = {}, []
    for name in sorted(set(d["model"].dropna())) if "model" in d.columns else []:
        try:
            mags[name] = model_magnitudes(name)
        except (ModelError, OSError, ValueError) as err:
            notes.append(f"No weight magnitudes for model {name}: {err}")
    planned = planned_cells(registry, study_id) if study_id is not None else None
    report = build_report(runs, mags, tasks, layers, model, planned)
    report.notes.extend(notes)
    return report
