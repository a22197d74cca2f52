"""The Runs tab's tools for the run on screen: its tags and note, its export (a peft adapter or a merged
transformers model, as a zip), and the registry's data as a file (the runs table, the run's events)."""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from moduletune.app.files import data_export, downloads
from moduletune.app.public import actions
from moduletune.app.public.errors import visitor_message
from moduletune.app.public.limits import PRIVATE_COLUMNS
from moduletune.tasks.artifacts import export_run

PUBLIC_EXPORT_ENV = "MODULETUNE_PUBLIC_EXPORT"  # 1: a public demo's visitors may export runs too (off by default)


def export_allowed(public) -> bool:
    """Export builds a model on the server: in public mode only where the operator turned it on."""
    return public is None or os.environ.get(PUBLIC_EXPORT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def export_zip(registry, run_id, fmt: str) -> Path:
    """The run exported (app.cli_export.export_run) and zipped under a name no other request shares."""

    folder = Path(tempfile.mkdtemp(prefix=f"moduletune-export-{int(run_id)}-", dir=downloads.downloads_dir()))
    try:
        out = export_run(registry, int(run_id), fmt, folder / f"run-{int(run_id)}-{fmt}")
        return Path(shutil.make_archive(str(folder / f"moduletune-run-{int(run_id)}-{fmt}"), "zip", out))
    finally:
        shutil.rmtree(folder / f"run-{int(run_id)}-{fmt}", ignore_errors=True)


def data_file(registry, what: str, fmt: str, run_id=None, public: bool = False) -> Path:
    """The runs table or one run's events as a csv/parquet/json file; a public demo's runs leave out who
    submitted them, where their files are and which host trained them."""
    folder = downloads.downloads_dir()
    if what == "events":
        if run_id is None:
            raise ValueError("pick a run first: its events are what is downloaded")
        return data_export.events_file(registry, [int(run_id)], fmt, folder=folder)
    frame = data_export.runs_table(registry)
    if public:
        frame = frame.drop(columns=[c for c in PRIVATE_COLUMNS if c in frame.columns])
    return data_export.write_table(frame, fmt, data_export.unique_path("runs", fmt, folder))


@dataclass
class RunTools:
    """The tools' components by name."""

    tags: gr.Textbox
    note: gr.Textbox
    save: gr.Button
    fmt: gr.Radio
    export: gr.Button
    exported: gr.DownloadButton
    data_fmt: gr.Radio
    runs_data: gr.Button
    events_data: gr.Button
    data_out: gr.DownloadButton


def layout(public) -> RunTools:
    """The accordion under a run: its tags and note, its export (where allowed), the data files."""
    with gr.Accordion("Tags, note, export and data", open=False, elem_id="run-tools"):
        with gr.Row():
            tags = gr.Textbox(label="Tags", placeholder="baseline, ln-only", elem_id="run-tags", scale=2)
            note = gr.Textbox(label="Note", elem_id="run-note", scale=3, lines=1, max_lines=6)
            save = gr.Button("Save tags and note", size="sm", elem_id="save-labels", scale=0, min_width=150)
        with gr.Row(visible=export_allowed(public)):
            fmt = gr.Radio(["peft", "transformers"], value="peft", label="Export as", elem_id="export-format")
            export = gr.Button("Export run (.zip)", size="sm", elem_id="export-run", scale=0, min_width=150)
            exported = gr.DownloadButton("Download export", visible=False, size="sm", elem_id="export-download")
        with gr.Row():
            data_fmt = gr.Radio(list(data_export.FORMATS), value="csv", label="Data as", elem_id="data-format")
            runs_data = gr.Button("All runs", size="sm", elem_id="data-runs", scale=0, min_width=110)
            events_data = gr.Button("This run's events", size="sm", elem_id="data-events", scale=0, min_width=150)
            data_out = gr.DownloadButton("Download data", visible=False, size="sm", elem_id="data-download")
    return RunTools(tags, note, save, fmt, export, exported, data_fmt, runs_data, events_data, data_out)


def build(ctx, run_select, message):
    """Lay out the tools (inside the Runs tab) for the run shown in run_select; messages go to `message`."""
    registry, who, private, public = ctx.registry, ctx.who, ctx.private, ctx.public
    ui = layout(public)
    tags, note, save, fmt, export, exported = ui.tags, ui.note, ui.save, ui.fmt, ui.export, ui.exported
    data_fmt, data_out = ui.data_fmt, ui.data_out

    def labels_of(run_id):
        """The shown run's tags and note into the boxes (blank with no run)."""
        if run_id is None:
            return "", ""
        try:
            run = registry.get(int(run_id))
        except Exception:  # a run deleted meanwhile: nothing to show
            return "", ""
        return ", ".join(run.tags), run.note or ""

    run_select.change(
        labels_of, None, [tags, note], inputs_kwargs=dict(run_id=run_select), show_progress="hidden", **private
    )

    def on_save(run_id, tag_text, note_text, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if run_id is None:
            return gr.skip(), gr.skip(), "Pick a run first."
        try:
            out = actions.set_run_labels(registry, run_id, tag_text, note_text, who(request, profile))
        except Exception as err:
            return gr.skip(), gr.skip(), f"⚠️ {visitor_message(err, 'save the tags and note')}"
        shown = ", ".join(out["tags"]) or "none"
        return ", ".join(out["tags"]), out["notes"] or "", f"Run #{out['id']}: tags {shown}; note saved."

    save.click(
        on_save,
        None,
        [tags, note, message],
        inputs_kwargs=dict(run_id=run_select, tag_text=tags, note_text=note),
        **private,
    )

    def on_export(run_id, chosen):
        if not export_allowed(public):
            return gr.skip(), "⚠️ export is off in this public demo"
        if run_id is None:
            return gr.skip(), "Pick a succeeded run first."
        try:
            path = export_zip(registry, run_id, chosen)
        except Exception as err:
            return gr.DownloadButton(visible=False), f"⚠️ {visitor_message(err, 'export the run')}"
        label = f"Download run #{run_id} as {chosen} (.zip)"
        return gr.DownloadButton(label, value=str(path), visible=True), f"Run #{run_id} exported as {chosen}."

    export.click(
        on_export,
        None,
        [exported, message],
        inputs_kwargs=dict(run_id=run_select, chosen=fmt),
        show_progress="minimal",
        **private,
    )

    def on_data(what):
        def handler(run_id, chosen):
            try:
                path = data_file(registry, what, chosen, run_id, public=public is not None)
            except Exception as err:
                return gr.DownloadButton(visible=False), f"⚠️ {visitor_message(err, 'write the data file')}"
            return gr.DownloadButton(f"Download {path.name}", value=str(path), visible=True), ""

        return handler

    for button, what in ((ui.runs_data, "runs"), (ui.events_data, "events")):
        button.click(
            on_data(what), None, [data_out, message], inputs_kwargs=dict(run_id=run_select, chosen=data_fmt), **private
        )
