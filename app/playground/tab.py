"""The Playground tab: a finished run's prediction for a typed sentence (or pair) beside the base model's.

The boxes are named as a person reads the run's task (premise / hypothesis, question 1 / question 2, ...),
and a few real rows of its validation split wait to be clicked into them.
"""

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


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab."""
    registry, private = ctx.registry, ctx.private

    with gr.Tab("Playground", id="playground", elem_id="tab-playground") as tab_play:
        gr.Markdown(
            "Pick a finished run and type a sentence (or a pair), or click one of its task's validation rows: "
            "the tuned model's prediction next to the untuned base model's (the same encoder with a fresh, "
            "untrained head).",
            elem_classes="help",
        )
        play_run = gr.Dropdown([], value=None, label="Finished run (its score)", elem_id="play-run")
        with gr.Row():
            play_a = gr.Textbox(
                "", label="Sentence", lines=2, elem_id="play-text-a", placeholder="A man is playing a guitar."
            )
            play_b = gr.Textbox(
                "",
                label="Second sentence",
                lines=2,
                elem_id="play-text-b",
                placeholder="A person plays an instrument.",
                visible=False,
            )
        # One table per shape of task, so a single-sentence task shows no empty second column.
        examples_one = gr.Dataset(
            components=[play_a], samples=[], type="index", label=EXAMPLES_LABEL, visible=False, elem_id="play-examples"
        )
        examples_two = gr.Dataset(
            components=[play_a, play_b],
            samples=[],
            type="index",
            label=EXAMPLES_LABEL,
            visible=False,
            elem_id="play-examples-pair",
        )
        examples_rows = gr.State([])
        shown_task = gr.State(None)  # the boxes hold this task's texts
        play_go = gr.Button("Predict", variant="primary", elem_id="play-go")
        play_msg = gr.Markdown("", elem_id="play-msg")
        with gr.Row():
            play_tuned = gr.Label(label="Tuned run", elem_id="play-tuned", num_top_classes=3)
            play_base = gr.Label(label="Untuned base model", elem_id="play-base", num_top_classes=3)

    def on_play_tab(current):
        choices = model_views.scored_run_choices(registry)
        ids = [c[1] for c in choices]
        return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    tab_play.select(on_play_tab, play_run, play_run, **private)

    def on_play_run(run_id, task_before):
        hidden = gr.Dataset(visible=False, samples=[])
        if run_id in (None, ""):
            note = "No finished run yet: queue one in the Experiment tab."
            return gr.Textbox(label="Sentence"), gr.Textbox(visible=False), note, hidden, hidden, [], None, None, None
        spec = predict.task_inputs(registry, run_id)
        reset = {} if spec["task"] == task_before else {"value": ""}  # another task's texts do not fit its boxes
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
        return (
            gr.Textbox(label=labels[0], **reset),
            gr.Textbox(label=labels[1] if pair else "", visible=pair, **reset),
            note,
            table if pair else hidden,
            hidden if pair else table,
            [{**r, "task": found["task"], "split": found["split"]} for r in rows],
            spec["task"],
            None,  # the last prediction was another run's
            None,
        )

    play_run.change(
        on_play_run,
        [play_run, shown_task],
        [play_a, play_b, play_msg, examples_two, examples_one, examples_rows, shown_task, play_tuned, play_base],
        **private,
    )

    def on_example(index, rows):
        if index is None or not 0 <= index < len(rows):
            return gr.skip(), gr.skip(), gr.skip()
        row = rows[index]
        texts = [*row["texts"], ""][:2]
        where = f"{row['task']} {row['split']} row {row['idx']}"
        return texts[0], texts[1], f"Example: {where}, gold answer **{_gold(row['label'])}**. Press Predict."

    for table in (examples_one, examples_two):
        table.click(on_example, [table, examples_rows], [play_a, play_b, play_msg], **private)

    def on_predict(run_id, text_a, text_b):
        try:
            out = predict.predict(registry, run_id, text_a, text_b)
        except (ValueError, OSError) as err:
            return None, None, f"⚠️ {err}"

        def fmt(v):  # class probabilities for gr.Label, or STS-B's similarity score as text
            return v if "score" not in v else f"similarity {v['score']:.3f}"

        return (
            fmt(out["tuned"]),
            fmt(out["base"]),
            (f"Tuned: **{out['label']}** · untuned base: **{out['base_label']}** ({out['task']})"),
        )

    play_go.click(on_predict, [play_run, play_a, play_b], [play_tuned, play_base, play_msg], **private)
    return tab_play
