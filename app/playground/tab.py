"""The Playground tab: a finished run's prediction for a typed sentence (or pair) beside the base model's.

The boxes are named as a person reads the run's task (premise / hypothesis, question 1 / question 2, ...),
and a few real rows of its validation split wait to be clicked into them.
"""

from dataclasses import dataclass
from typing import Any

import gradio as gr

from moduletune.app.playground import predict
from moduletune.app.weights import models as model_views

EXAMPLES_LABEL = "Examples from the validation set: click one to fill the boxes"


def _title(label: str) -> str:
    """'sentence 1' -> 'Sentence 1': a box's label as a heading."""
    return label[:1].upper() + label[1:]


def _gold(label) -> str:
    """A row's gold answer as text: a class name, or STS-B's similarity score."""
    return f"score {label:.2f}" if isinstance(label, float) else str(label)


@dataclass
class PlaygroundTab:
    """The Playground tab's components by name: the run, the texts and their examples, the two predictions."""

    tab: gr.Tab
    run: gr.Dropdown
    text_a: gr.Textbox
    text_b: gr.Textbox
    examples_one: gr.Dataset
    examples_two: gr.Dataset
    examples_rows: gr.State
    shown_task: gr.State
    go: gr.Button
    msg: gr.Markdown
    tuned: gr.Label
    base: gr.Label


def build(ctx) -> PlaygroundTab:
    """Lay out the tab and wire its events inside the Blocks being built; returns its components by name."""
    tab = layout()
    wire(ctx, tab)
    return tab


def layout() -> PlaygroundTab:
    """The tab's components: the run, the text boxes, the examples tables, Predict and the two answers."""
    with gr.Tab("Playground", id="playground", elem_id="tab-playground") as tab:
        gr.Markdown(
            "Pick a finished run and type a sentence (or a pair), or click one of its task's validation rows: "
            "the tuned model's prediction next to the untuned base model's (the same encoder with a fresh, "
            "untrained head).",
            elem_classes="help",
        )
        run = gr.Dropdown([], value=None, label="Finished run (its score)", elem_id="play-run")
        with gr.Row():
            text_a = gr.Textbox(
                "", label="Sentence", lines=2, elem_id="play-text-a", placeholder="A man is playing a guitar."
            )
            text_b = gr.Textbox(
                "",
                label="Second sentence",
                lines=2,
                elem_id="play-text-b",
                placeholder="A person plays an instrument.",
                visible=False,
            )
        # One table per shape of task, so a single-sentence task shows no empty second column.
        examples_one = gr.Dataset(
            components=[text_a], samples=[], type="index", label=EXAMPLES_LABEL, visible=False, elem_id="play-examples"
        )
        examples_two = gr.Dataset(
            components=[text_a, text_b],
            samples=[],
            type="index",
            label=EXAMPLES_LABEL,
            visible=False,
            elem_id="play-examples-pair",
        )
        examples: dict[str, Any] = dict(
            examples_one=examples_one, examples_two=examples_two, examples_rows=gr.State([])
        )
        shown_task = gr.State(None)  # the boxes hold this task's texts
        go = gr.Button("Predict", variant="primary", elem_id="play-go")
        msg = gr.Markdown("", elem_id="play-msg")
        with gr.Row():
            tuned = gr.Label(label="Tuned run", elem_id="play-tuned", num_top_classes=3)
            base = gr.Label(label="Untuned base model", elem_id="play-base", num_top_classes=3)
    boxes: dict[str, Any] = dict(text_a=text_a, text_b=text_b)
    answers: dict[str, Any] = dict(go=go, msg=msg, tuned=tuned, base=base)
    return PlaygroundTab(tab=tab, run=run, **boxes, **examples, shown_task=shown_task, **answers)


def wire(ctx, t: PlaygroundTab) -> None:
    """The tab opening lists the finished runs; a run sets up its boxes and examples; an example fills the boxes;
    Predict asks both models."""
    registry, private = ctx.registry, ctx.private
    t.tab.select(choices_handler(registry), None, t.run, inputs_kwargs=dict(current=t.run), **private)
    run_outputs = [t.text_a, t.text_b, t.msg, t.examples_two, t.examples_one, t.examples_rows, t.shown_task]
    t.run.change(
        run_handler(registry, t),
        None,
        [*run_outputs, t.tuned, t.base],
        inputs_kwargs=dict(run_id=t.run, task_before=t.shown_task),
        **private,
    )
    for table in (t.examples_one, t.examples_two):
        table.click(
            example_handler(t),
            None,
            [t.text_a, t.text_b, t.msg],
            inputs_kwargs=dict(index=table, rows=t.examples_rows),
            **private,
        )
    t.go.click(
        predict_handler(registry, t),
        None,
        [t.tuned, t.base, t.msg],
        inputs_kwargs=dict(run_id=t.run, text_a=t.text_a, text_b=t.text_b),
        **private,
    )


def choices_handler(registry):
    """The tab opening's handler: the scored runs to pick from, the current pick kept where it still is one."""

    def on_play_tab(current):
        choices = model_views.scored_run_choices(registry)
        ids = [c[1] for c in choices]
        return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    return on_play_tab


def run_handler(registry, t: PlaygroundTab):
    """A run's handler: the boxes named for its task, a few validation rows to click, the old answers cleared."""

    def on_play_run(run_id, task_before):
        hidden = gr.Dataset(visible=False, samples=[])
        cleared = {t.shown_task: None, t.tuned: None, t.base: None}  # the last prediction was another run's
        if run_id in (None, ""):
            note = "No finished run yet: queue one in the Experiment tab."
            boxes = {t.text_a: gr.Textbox(label="Sentence"), t.text_b: gr.Textbox(visible=False)}
            tables = {t.examples_two: hidden, t.examples_one: hidden, t.examples_rows: []}
            return {**boxes, t.msg: note, **tables, **cleared}
        spec = predict.task_inputs(registry, run_id)
        reset: dict[str, Any] = (
            {} if spec["task"] == task_before else {"value": ""}
        )  # another task's texts do not fit its boxes
        labels, pair = [_title(v) for v in spec["labels"]], spec["pair"]
        note = f"Task **{spec['task']}**" + (": {} and {}.".format(*spec["labels"]) if pair else ".")
        try:
            found = predict.task_examples(registry, run_id)
        except (ValueError, OSError) as err:  # no local GLUE file, Hub offline: the boxes still work
            found, note = {"rows": []}, f"{note} No examples to offer: {err}"
        rows = found["rows"]
        table = gr.Dataset(
            samples=[list(r["texts"]) for r in rows], headers=labels, visible=bool(rows), label=EXAMPLES_LABEL
        )
        return {
            t.text_a: gr.Textbox(label=labels[0], **reset),
            t.text_b: gr.Textbox(label=labels[1] if pair else "", visible=pair, **reset),
            t.msg: note,
            t.examples_two: table if pair else hidden,
            t.examples_one: hidden if pair else table,
            t.examples_rows: [{**r, "task": found["task"], "split": found["split"]} for r in rows],
            **cleared,
            t.shown_task: spec["task"],
        }

    return on_play_run


def example_handler(t: PlaygroundTab):
    """An example's handler: its texts into the boxes and its gold answer in the message."""

    def on_example(index, rows):
        if index is None or not 0 <= index < len(rows):
            return gr.skip()
        row = rows[index]
        texts = [*row["texts"], ""][:2]
        where = f"{row['task']} {row['split']} row {row['idx']}"
        message = f"Example: {where}, gold answer **{_gold(row['label'])}**. Press Predict."
        return {t.text_a: texts[0], t.text_b: texts[1], t.msg: message}

    return on_example


def predict_handler(registry, t: PlaygroundTab):
    """Predict's handler: the tuned run's answer beside the untuned base model's."""

    def on_predict(run_id, text_a, text_b):
        try:
            out = predict.predict(registry, run_id, text_a, text_b)
        except (ValueError, OSError) as err:
            return {t.tuned: None, t.base: None, t.msg: f"⚠️ {err}"}
        message = f"Tuned: **{out['label']}** · untuned base: **{out['base_label']}** ({out['task']})"
        return {t.tuned: label_value(out["tuned"]), t.base: label_value(out["base"]), t.msg: message}

    return on_predict


def label_value(v):
    """Class probabilities for gr.Label, or STS-B's similarity score as text."""
    return v if "score" not in v else f"similarity {v['score']:.3f}"
