"""Tokenize-once cache and length-grouped batching."""

import numpy as np
import torch

from moduletune.tuning import batches, glue
from moduletune.tuning.models import load_tokenizer


def test_tokens_are_cached_and_the_key_follows_tokenizer_data_and_length(glue_dir, home):
    tok = load_tokenizer("all-MiniLM-L6-v2")
    dev = glue.load_glue("rte", glue_dir)["validation"]
    cols = glue.get_task("rte").text_columns
    first = batches.encode(tok, dev, cols, 128)
    files = list((home / "cache" / "tokens").glob("*.pt"))
    assert len(files) == 1
    again = batches.encode(load_tokenizer("all-MiniLM-L6-v2"), dev, cols, 128)
    assert again.key == first.key and again.input_ids == first.input_ids
    assert len(list((home / "cache" / "tokens").glob("*.pt"))) == 1  # reused, not rewritten
    assert batches.encode(tok, dev, cols, 64).key != first.key
    assert batches.encode(tok, dev.select(range(10)), cols, 128).key != first.key
    changed = load_tokenizer("all-MiniLM-L6-v2")
    changed.add_tokens(["moduletune"])
    assert batches.encode(changed, dev, cols, 128).key != first.key
    assert max(first.lengths) <= 128 and max(batches.encode(tok, dev, cols, 64).lengths) == 64


def test_length_grouped_batches_cover_everything_once_and_pad_little():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=3000)
    grouped = batches.length_grouped_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(grouped)
    assert sorted(flat.tolist()) == list(range(3000))
    assert all(len(b) <= 32 for b in grouped)
    padded = sum(len(b) * lengths[b].max() for b in grouped)
    random_order = np.random.default_rng(1).permutation(3000)
    naive = sum(len(b) * lengths[b].max() for b in np.array_split(random_order, len(grouped)))
    assert padded < 0.7 * naive
    again = batches.length_grouped_batches(lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(grouped, again))


def test_collate_pads_like_the_transformers_collator(glue_dir, home):
    """Our numpy padding gives exactly DataCollatorWithPadding's tensors (pair task, regression labels too)."""
    from transformers import DataCollatorWithPadding

    from moduletune.tuning.config import RunConfig
    from moduletune.tuning.models import load_tokenizer
    from moduletune.tuning.train import prepare_data

    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    for task_name in ("rte", "stsb"):
        _, enc, _ = prepare_data(RunConfig(task=task_name, max_train=40, max_eval=8, glue_dir=str(glue_dir)), tokenizer)
        idx = np.array([5, 0, 17, 33])
        for multiple in (None, 8):
            reference = DataCollatorWithPadding(tokenizer, return_tensors="pt", pad_to_multiple_of=multiple)(
                [
                    {
                        "input_ids": enc.input_ids[i],
                        "token_type_ids": enc.token_type_ids[i],
                        "labels": enc.labels[i].item(),
                    }
                    for i in idx
                ]
            )
            ours = batches.collate(enc, idx, batches.Padding(tokenizer.pad_token_id, multiple))
            assert set(ours) == set(reference)
            assert ours["input_ids"].shape[1] == batches.padded_width(enc.lengths[idx], batches.Padding(0, multiple))
            for key in reference:
                assert ours[key].dtype == reference[key].dtype and torch.equal(ours[key], reference[key]), key


def test_padded_width_rounds_up_but_never_past_the_cap_nor_below_the_longest():
    assert batches.padded_width([3, 17, 9], batches.Padding(0)) == 17
    assert batches.padded_width([3, 17, 9], batches.Padding(0, multiple=16)) == 32
    assert batches.padded_width([3, 17, 9], batches.Padding(0, multiple=16, max_len=20)) == 20
    assert batches.padded_width([128], batches.Padding(0, multiple=48, max_len=128)) == 128
