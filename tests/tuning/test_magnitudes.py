"""Weight-magnitude statistics: the LayerNorms' large |w| measured on the real embedded MiniLM."""

import pytest
import torch

from moduletune.tuning import magnitudes
from moduletune.tuning.models import load_classifier

DENSE = ("query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output")


@pytest.fixture(scope="module")
def rows():
    return magnitudes.magnitude_stats(load_classifier("all-MiniLM-L6-v2", 2))


def test_layernorm_weights_an_order_of_magnitude_above_every_dense_matrix(rows):
    summary = magnitudes.family_summary(rows, "weight")
    for family in DENSE:
        assert summary["layernorm"] > 9 * summary[family], (family, summary)
    # Layer by layer too: the smallest LayerNorm mean beats the largest dense matrix mean by >5x.
    ln = min(r["mean_abs"] for r in rows if r["family"] == "layernorm" and r["kind"] == "weight")
    dense = max(r["mean_abs"] for r in rows if r["family"] in DENSE and r["kind"] == "weight")
    assert ln > 5 * dense


def test_rows_cover_every_family_layer_and_kind(rows):
    keys = {(r["family"], r["layer"], r["kind"]) for r in rows}
    for layer in range(6):
        for family in DENSE + ("layernorm",):
            assert (family, layer, "weight") in keys and (family, layer, "bias") in keys
    one = next(r for r in rows if (r["family"], r["layer"], r["kind"]) == ("layernorm", 5, "weight"))
    assert one["count"] == 768  # two LayerNorms of 384
    assert one["q05"] <= one["q25"] <= one["q50"] <= one["q75"] <= one["q95"] <= one["max_abs"]
    assert sum(one["hist"]) == one["count"] and len(one["hist"]) == len(magnitudes.HIST_EDGES) - 1


def test_stats_are_exact_on_a_known_tensor():
    model = load_classifier("all-MiniLM-L6-v2", 2)
    w = model.bert.encoder.layer[0].attention.self.query.weight
    row = next(
        r for r in magnitudes.magnitude_stats(model) if (r["family"], r["layer"], r["kind"]) == ("query", 0, "weight")
    )
    assert row["mean_abs"] == pytest.approx(float(w.detach().abs().mean()), rel=1e-6)
    assert row["q50"] == pytest.approx(float(w.detach().abs().flatten().median()), rel=1e-3)


def test_relative_change_of_a_perturbed_module():
    base = load_classifier("all-MiniLM-L6-v2", 2)
    tuned = load_classifier("all-MiniLM-L6-v2", 2)
    with torch.no_grad():
        ln = tuned.bert.encoder.layer[2].output.LayerNorm.weight
        ln.mul_(1.1)  # a 10% move
    name = "bert.encoder.layer.2.output.LayerNorm.weight"
    rows = magnitudes.relative_change(base, tuned, names={name})
    assert len(rows) == 1 and rows[0]["family"] == "layernorm" and rows[0]["layer"] == 2
    assert rows[0]["relative_change"] == pytest.approx(0.1, rel=1e-4)
    # Without a name filter the layer's two LayerNorms form one group: ||0.1 w_out|| / ||(w_att, w_out)||.
    untouched = magnitudes.relative_change(base, tuned)
    assert [r["layer"] for r in untouched] == [2]
    layer = base.bert.encoder.layer[2]
    w_out, w_att = layer.output.LayerNorm.weight.detach(), layer.attention.output.LayerNorm.weight.detach()
    expected = 0.1 * w_out.norm() / torch.sqrt(w_out.norm() ** 2 + w_att.norm() ** 2)
    assert untouched[0]["relative_change"] == pytest.approx(float(expected), rel=1e-4)
