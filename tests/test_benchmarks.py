"""Smoke test of the benchmark harness (`python -m benchmarks.run --quick`): the result files are well
formed and the folded-BatchNorm inference path computes the same logits. No timing assertions: the
numbers of a batch-8, two-step run on a shared machine mean nothing."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import _worker, run
from jaxnets import nn as jnn


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = run.main(["--quick", "--model", "lenet5", "--frameworks", "jaxnets,flax,torch", "--tasks", "train",
                     "--extras", "fit,pipeline", "--out", str(out)])
    assert code == 0
    return out


def test_model_results_are_well_formed(quick_results):
    data = json.loads((quick_results / "lenet5.json").read_text())
    assert data["model"] == "lenet5" and data["batch_size"] == 8 and data["repeats"] == 1
    assert set(data["machine"]) >= {"cpu", "cores", "date"}
    assert len(data["runs"]) == 3
    for r in data["runs"]:
        assert "error" not in r, r.get("error")
        assert r["config"]["task"] == "train" and r["steps"] == 2 and len(r["step_times_s"]) == 2
        assert r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["param_count"] == 61_706
        assert r["versions"]["jax"] and r["versions"]["torch"]
    jax_runs = [r for r in data["runs"] if r["config"]["framework"] in ("jaxnets", "flax")]
    assert all(r["compile_s"] > 0 for r in jax_runs)
    summary = data["summary"]["train"]
    assert set(summary) == {"jaxnets", "flax", "torch"}
    assert summary["jaxnets"]["jaxnets_over_this"] == 1.0
    for res in summary.values():
        assert res["images_per_s"]["min"] <= res["images_per_s"]["median"] <= res["images_per_s"]["max"]


def test_extras_are_well_formed(quick_results):
    data = json.loads((quick_results / "extras.json").read_text())
    (fit,), (pipe,) = data["results"]["fit"], data["results"]["pipeline"]
    assert "error" not in fit and "error" not in pipe, (fit.get("error"), pipe.get("error"))
    assert len(fit["bare_epoch_s"]) == 2 and len(fit["fit_epoch_s"]) == 1  # epoch 1 (compilation) dropped
    assert fit["batches_per_epoch"] == 256 // 8
    assert np.isfinite(fit["fit_overhead"])
    for key in ("mnist_5k_host", "mnist_5k_device", "cifar_shaped_10k_host", "cifar_shaped_10k_device"):
        assert pipe[f"{key}_images_per_s"] > 0


def test_unknown_model_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        run.main(["--quick", "--model", "alexnet", "--out", str(tmp_path)])


class _ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
        x = jax.nn.relu(jnn.BatchNorm()(jnn.Conv(4, 3, padding=1)(x), train=train))
        y = jnn.BatchNorm()(jnn.Conv(5, 1, stride=2, use_bias=False)(x), train=train)
        return jnn.Dense(3)(jnn.GlobalAvgPool()(y))


def test_folded_inference_equals_unfolded(rng):
    model = _ConvBN()
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)).astype(np.float32))
    variables = model.init(jax.random.key(0), x, train=False)
    # non-trivial running statistics and affine parameters, so folding has something to fold
    variables = jax.tree.map(lambda a: a + jnp.asarray(rng.uniform(0.1, 0.9, a.shape), a.dtype), variables)
    predict, folded = _worker._folded_predict(model, variables, x[:1])
    assert len(folded) == 2
    np.testing.assert_allclose(predict(variables, folded, x), model.apply(variables, x, train=False),
                               rtol=1e-5, atol=1e-5)
