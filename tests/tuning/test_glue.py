"""Tests for tuning.glue: real GLUE files load with official sizes, labels and quirks; metrics; subsampling."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from moduletune.tuning.glue import (
    TASKS,
    GlueError,
    compute_metrics,
    evaluate_splits,
    get_task,
    load_glue,
    require_split,
    resolve_glue_dir,
    subsample,
)

# Official GLUE sizes of the files in the shared folder (see its SOURCES.md); QNLI has only its dev file.
OFFICIAL_ROWS = {
    "cola": {"train": 8551, "validation": 1043},
    "sst2": {"train": 67349, "validation": 872},
    "mrpc": {"train": 3668, "validation": 408},
    "stsb": {"train": 5749, "validation": 1500},
    "qnli": {"validation": 5463},
    "rte": {"train": 2490, "validation": 277},
    "wnli": {"train": 635, "validation": 71},
}

# Class counts in label-id order, counted from the files with cut/sort/uniq.
PINNED_COUNTS = {
    ("cola", "train"): (2528, 6023),
    ("cola", "validation"): (322, 721),
    ("sst2", "train"): (29780, 37569),
    ("sst2", "validation"): (428, 444),
    ("mrpc", "train"): (1194, 2474),
    ("mrpc", "validation"): (129, 279),
    ("qnli", "validation"): (2702, 2761),
    ("rte", "train"): (1249, 1241),
    ("rte", "validation"): (146, 131),
    ("wnli", "train"): (323, 312),
    ("wnli", "validation"): (40, 31),
}

# Where each field sits in the raw files, for an independent reading with str.split.
RAW_FIELDS = {  # task: (text column names in the file, label column) -- CoLA by position
    "cola": ((3,), 1),
    "sst2": (("sentence",), "label"),
    "mrpc": (("#1 String", "#2 String"), "Quality"),
    "stsb": (("sentence1", "sentence2"), "score"),
    "qnli": (("question", "sentence"), "label"),
    "rte": (("sentence1", "sentence2"), "label"),
    "wnli": (("sentence1", "sentence2"), "label"),
}


@pytest.fixture(scope="module")
def loaded(glue_dir):
    """Every task in OFFICIAL_ROWS loaded once (SST-2 train alone is 67k rows)."""
    return {name: load_glue(name, glue_dir) for name in OFFICIAL_ROWS}


def raw_rows(path: Path, task: str):
    """(texts, label string) per data row, read with plain str.split and no csv module."""
    lines = path.read_bytes().decode("utf-8").removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    text_cols, label_col = RAW_FIELDS[task]
    if task != "cola":
        header = lines.pop(0).split("\t")
        text_cols = [header.index(c) for c in text_cols]
        label_col = header.index(label_col)
    cells = [line.split("\t") for line in lines]
    return [([c[i] for i in text_cols], c[label_col]) for c in cells]


def raw_label_id(task: str, label: str):
    names = TASKS[task].label_names
    return float(label) if not names else names.index(label) if label in names else int(label)


def file_for(glue_dir: Path, task: str, split: str) -> Path:
    return glue_dir / TASKS[task].folder / ("train.tsv" if split == "train" else "dev.tsv")


# --- tasks --------------------------------------------------------------------------------------


def test_nine_tasks_in_order_with_consistent_metadata():
    assert list(TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    for task in TASKS.values():
        assert task.primary_metric in task.metrics
        assert task.num_labels == (1 if task.name == "stsb" else len(task.label_names))
    assert TASKS["stsb"].is_regression and not TASKS["rte"].is_regression
    assert TASKS["mnli"].num_labels == 3
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert TASKS["wnli"].label_names == ("not_entailment", "entailment")
    assert TASKS["qnli"].text_columns == ("question", "sentence")


def test_get_task_accepts_names_and_folders_case_insensitively():
    assert get_task("SST-2") is TASKS["sst2"]
    assert get_task("sts-b") is TASKS["stsb"]
    assert get_task(" CoLA ") is TASKS["cola"]
    assert get_task("MNLI") is TASKS["mnli"]
    assert get_task(TASKS["rte"]) is TASKS["rte"]


def test_unknown_task_error_lists_allowed_tasks(glue_dir):
    for call in (lambda: get_task("imdb"), lambda: load_glue("imdb", glue_dir)):
        with pytest.raises(GlueError) as err:
            call()
        assert "imdb" in str(err.value)
        assert all(name in str(err.value) for name in TASKS)


def test_import_is_cheap():
    code = "import sys, tuning.glue; assert 'datasets' not in sys.modules and 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# --- loading the real files ----------------------------------------------------------------------


@pytest.mark.parametrize("name", OFFICIAL_ROWS)
def test_official_row_counts_columns_and_dtypes(loaded, name):
    task, dsd = TASKS[name], loaded[name]
    assert {split: len(ds) for split, ds in dsd.items()} == OFFICIAL_ROWS[name]
    for ds in dsd.values():
        assert ds.column_names == [*task.text_columns, "label", "idx"]
        label_type = str(ds.data.schema.field("label").type)
        if task.is_regression:
            assert label_type == "float"  # arrow float32
        else:
            assert label_type == "int64"
            assert ds.features["label"].names == list(task.label_names)
        assert ds["idx"] == list(range(len(ds)))
        assert all(
            isinstance(ds.features[c].dtype, str) and ds.features[c].dtype == "string" for c in task.text_columns
        )


@pytest.mark.parametrize("name", OFFICIAL_ROWS)
def test_every_row_matches_an_independent_reading_of_the_file(loaded, glue_dir, name):
    task = TASKS[name]
    for split, ds in loaded[name].items():
        rows = raw_rows(file_for(glue_dir, name, split), name)
        assert len(rows) == len(ds)
        for column_index, column in enumerate(task.text_columns):
            assert ds[column] == [texts[column_index] for texts, _ in rows]
        expected = [raw_label_id(name, label) for _, label in rows]
        assert np.allclose(ds["label"], expected) if task.is_regression else ds["label"] == expected


@pytest.mark.parametrize("name, split", PINNED_COUNTS)
def test_label_distribution(loaded, glue_dir, name, split):
    ds = loaded[name][split]
    counts = Counter(ds["label"])
    assert tuple(counts[i] for i in range(TASKS[name].num_labels)) == PINNED_COUNTS[name, split]
    raw = Counter(raw_label_id(name, label) for _, label in raw_rows(file_for(glue_dir, name, split), name))
    assert counts == raw


def test_cola_has_no_header_and_keeps_its_last_unterminated_row(loaded):
    train, dev = loaded["cola"]["train"], loaded["cola"]["validation"]
    assert train[0]["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert train[0]["label"] == 1
    assert dev[0]["sentence"] == "The sailors rode the breeze clear of the rocks."
    assert dev[-1]["sentence"] == "John talked to Bill about himself."  # dev.tsv ends without a newline
    assert train[3056]["sentence"] == 'Susan whispered "Shut up".'


def test_mrpc_bom_header_and_unbalanced_quotes(loaded):
    first = loaded["mrpc"]["validation"][0]
    assert first["label"] == 1
    assert (
        first["sentence1"]
        == "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy ."
    )
    assert first["sentence2"] == '" The foodservice pie business does not fit our long-term growth strategy .'
    assert loaded["mrpc"]["train"][1]["label"] == 0


def test_quotes_and_trailing_spaces_are_kept_verbatim(loaded):
    rte = loaded["rte"]["validation"]
    assert rte[137]["sentence1"].startswith('"It\'s Only a Play" is Terrence McNally\'s "Give My Regards')
    assert loaded["sst2"]["validation"][0]["sentence"] == "it 's a charming and often affecting journey . "
    assert loaded["wnli"]["validation"][20]["sentence1"].endswith('saying simply: "There\'s plenty."')


def test_stsb_labels_are_float_scores(loaded):
    for ds in loaded["stsb"].values():
        scores = np.asarray(ds["label"])
        assert scores.dtype.kind == "f"
        assert scores.min() == 0.0 and scores.max() == 5.0
        assert len(np.unique(scores)) > 50 and (scores % 1 != 0).any()  # real-valued, not classes
    assert loaded["stsb"]["train"][1]["label"] == pytest.approx(3.8)


def test_glue_dir_from_environment(glue_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MODULETUNE_GLUE_DIR", str(glue_dir))
    assert resolve_glue_dir() == glue_dir
    assert resolve_glue_dir(tmp_path) == tmp_path  # an explicit folder wins
    assert len(load_glue("wnli")["validation"]) == 71
    monkeypatch.delenv("MODULETUNE_GLUE_DIR")
    assert resolve_glue_dir() is None  # None means the Hub


# --- missing data ------------------------------------------------------------------------------


def test_missing_task_folder_names_the_path(tmp_path):
    with pytest.raises(GlueError) as err:
        load_glue("sst2", tmp_path)
    assert str(tmp_path / "SST-2") in str(err.value)
    assert "SST-2/train.tsv and SST-2/dev.tsv" in str(err.value)


def test_folder_without_dev_file_names_the_dev_path(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(GlueError) as err:
        load_glue("rte", tmp_path)
    assert str(tmp_path / "RTE" / "dev.tsv") in str(err.value)


def test_dev_only_folder_loads_and_missing_train_is_reported_with_its_path(loaded, glue_dir):
    dsd = loaded["qnli"]
    assert list(dsd) == ["validation"]
    assert require_split(dsd, "validation", "qnli", glue_dir) is dsd["validation"]
    with pytest.raises(GlueError) as err:
        require_split(dsd, "train", "qnli", glue_dir)
    assert str(glue_dir / "QNLI" / "train.tsv") in str(err.value)
    with pytest.raises(GlueError, match="allowed: train, validation"):
        require_split(dsd, "test", "qnli", glue_dir)


# --- layouts not in the shared folder (made-up rows in the GLUE layout) --------------------------


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([header] if header else []) + rows
    path.write_text("".join("\t".join(cells) + "\n" for cells in lines), encoding="utf-8")


def test_mnli_layout_with_two_dev_files_and_a_short_row(tmp_path):
    head = [
        "index",
        "promptID",
        "pairID",
        "genre",
        "sentence1_binary_parse",
        "sentence2_binary_parse",
        "sentence1_parse",
        "sentence2_parse",
        "sentence1",
        "sentence2",
    ]
    pre = ["0", "1", "1e", "fiction", "(p)", "(h)", "(P)", "(H)"]
    write_tsv(
        tmp_path / "MNLI" / "train.tsv",
        head + ["label1", "gold_label"],
        [
            pre + ['The cat sat "here', "A cat sat.", "neutral", "neutral"],
            pre + ["Cut short"],  # malformed: too few fields
            pre + ["Dogs bark.", "Dogs are silent.", "contradiction", "contradiction"],
        ],
    )
    dev_head = head + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    write_tsv(tmp_path / "MNLI" / "dev_matched.tsv", dev_head, [pre + ["It rains.", "It is wet.", *["entailment"] * 6]])
    write_tsv(
        tmp_path / "MNLI" / "dev_mismatched.tsv",
        dev_head,
        [pre + ["A.", "B.", *["neutral"] * 6], pre + ["C.", "D.", *["contradiction"] * 6]],
    )
    dsd = load_glue("mnli", tmp_path)
    assert sorted(dsd) == ["train", "validation_matched", "validation_mismatched"]
    train = dsd["train"]
    assert train.column_names == ["premise", "hypothesis", "label", "idx"]
    assert train["premise"] == ['The cat sat "here', "Dogs bark."]
    assert train["label"] == [1, 2]
    assert train["idx"] == [0, 2]  # idx is the row's place in the file, as on the Hub
    assert dsd["validation_matched"]["label"] == [0]
    assert dsd["validation_mismatched"]["label"] == [1, 2]


def test_qqp_layout_and_header_cells_with_trailing_spaces(tmp_path):
    write_tsv(
        tmp_path / "QQP" / "dev.tsv",
        ["id ", "qid1", "qid2", "question1 ", "question2", "is_duplicate "],
        [["0", "1", "2", "How?", "How so?", "1"], ["1", "3", "4", "Why?"], ["2", "5", "6", "Who?", "What?", "0"]],
    )
    ds = load_glue("qqp", tmp_path)["validation"]
    assert ds.column_names == ["question1", "question2", "label", "idx"]
    assert ds["question2"] == ["How so?", "What?"]
    assert ds["label"] == [1, 0]


def test_unknown_label_is_an_error_naming_file_and_line(tmp_path):
    write_tsv(
        tmp_path / "RTE" / "dev.tsv",
        ["index", "sentence1", "sentence2", "label"],
        [["0", "a", "b", "entailment"], ["1", "c", "d", "maybe"]],
    )
    with pytest.raises(GlueError) as err:
        load_glue("rte", tmp_path)
    assert f"{tmp_path / 'RTE' / 'dev.tsv'}:3" in str(err.value)
    assert "maybe" in str(err.value) and "not_entailment" in str(err.value)


def test_missing_header_column_is_an_error(tmp_path):
    write_tsv(tmp_path / "SST-2" / "dev.tsv", ["text", "label"], [["good", "1"]])
    with pytest.raises(GlueError, match="no column 'sentence'"):
        load_glue("sst2", tmp_path)


# --- subsample -----------------------------------------------------------------------------------


def test_subsample_size_determinism_and_order(loaded):
    train = loaded["sst2"]["train"]
    a, b, c = (subsample(train, 1000, seed) for seed in (0, 0, 1))
    assert len(a) == 1000
    assert a["idx"] == b["idx"]
    assert a["idx"] != c["idx"]
    assert a["idx"] == sorted(a["idx"]) and len(set(a["idx"])) == 1000
    assert a[0]["sentence"] == train[a[0]["idx"]]["sentence"]


@pytest.mark.parametrize("name, n", [("sst2", 1000), ("sst2", 7), ("cola", 333), ("rte", 1), ("mrpc", 50)])
def test_subsample_keeps_class_proportions(loaded, name, n):
    train = loaded[name]["train"]
    full = Counter(train["label"])
    sample = Counter(subsample(train, n, seed=3)["label"])
    assert sum(sample.values()) == n
    for label, count in full.items():
        assert abs(sample[label] - n * count / len(train)) < 1


def test_subsample_none_or_large_returns_everything(loaded):
    dev = loaded["rte"]["validation"]
    assert subsample(dev, None, 0) is dev
    assert subsample(dev, len(dev), 0) is dev
    assert subsample(dev, 10_000, 0) is dev
    with pytest.raises(GlueError):
        subsample(dev, 0, 0)


def test_subsample_stsb(loaded):
    train = loaded["stsb"]["train"]
    a = subsample(train, 200, seed=5, stratify_by=None)
    assert len(a) == 200 and a["idx"] == subsample(train, 200, seed=5, stratify_by=None)["idx"]
    assert a["idx"] != subsample(train, 200, seed=6, stratify_by=None)["idx"]
    assert len(subsample(train, 200, seed=5)) == 200  # float labels fall back to a plain sample


# --- metrics -------------------------------------------------------------------------------------


def test_matthews_correlation():
    result = compute_metrics("cola", [1, 0, 0, 0], [1, 1, 0, 0])
    assert result == {"matthews_correlation": pytest.approx(2 / 12**0.5)}
    assert type(result["matthews_correlation"]) is float


def test_f1_and_accuracy():
    result = compute_metrics("mrpc", np.array([1, 1, 0, 1, 0]), np.array([1, 1, 1, 0, 0]))
    assert result == {"f1": pytest.approx(2 / 3), "accuracy": pytest.approx(3 / 5)}
    assert compute_metrics("qqp", [0, 0], [0, 0]) == {"f1": 0.0, "accuracy": 1.0}


def test_pearson_and_spearman():
    result = compute_metrics("stsb", np.array([1.0, 2.0, 3.0, 10.0], dtype=np.float32), [1.0, 2.0, 3.0, 4.0])
    assert result == {"pearson": pytest.approx(14 / 250**0.5), "spearman": pytest.approx(1.0)}
    assert compute_metrics("stsb", [[1.0], [2.0], [3.0]], [3.0, 2.0, 1.0])["pearson"] == pytest.approx(-1.0)
    assert all(type(v) is float for v in result.values())


def test_accuracy_and_logits():
    assert compute_metrics("sst2", [1, 0, 1, 1], [1, 1, 1, 1]) == {"accuracy": 0.75}
    assert compute_metrics("rte", [[0.9, 0.1], [0.2, 0.8]], [0, 0]) == {"accuracy": 0.5}


def test_metric_names_match_the_task_metadata():
    for task in TASKS.values():
        preds = [0.5, 1.5, 2.5] if task.is_regression else [0, 1, 0]
        result = compute_metrics(task, preds, [1.0, 2.0, 2.0] if task.is_regression else [0, 1, 1])
        expected = ("accuracy",) if task.name == "mnli" else task.metrics
        assert tuple(result) == expected


def test_evaluate_splits():
    mnli = evaluate_splits(
        "mnli", {"validation_matched": ([0, 1, 2, 2], [0, 1, 2, 0]), "validation_mismatched": ([1, 1], [1, 0])}
    )
    assert mnli == {"accuracy_matched": 0.75, "accuracy_mismatched": 0.5}
    assert tuple(mnli) == TASKS["mnli"].metrics
    assert evaluate_splits("rte", {"validation": ([0, 1], [0, 1])}) == {"accuracy": 1.0}
    with pytest.raises(GlueError, match="validation_matched"):
        evaluate_splits("mnli", {"validation": ([0], [0])})


def test_mismatched_lengths_are_an_error():
    with pytest.raises(GlueError, match="3 predictions and 2 labels"):
        compute_metrics("sst2", [0, 1, 1], [0, 1])
