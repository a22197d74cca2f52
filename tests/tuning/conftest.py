"""Fixtures shared by the engine tests."""

import pytest

from moduletune.tuning.models import load_classifier, load_tokenizer


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory):
    """The embedded MiniLM saved with dropout off: here caching the frozen prefix must change nothing."""
    path = tmp_path_factory.mktemp("minilm-nodrop")
    model = load_classifier("all-MiniLM-L6-v2", 2).base_model
    model.config.hidden_dropout_prob = 0.0
    model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(path)
    load_tokenizer("all-MiniLM-L6-v2").save_pretrained(path)
    return str(path)
