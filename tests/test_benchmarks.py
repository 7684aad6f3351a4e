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


@pytest.mark.slow  # runs the benchmark harness
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


@pytest.mark.slow  # runs the benchmark harness
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


@pytest.mark.slow  # runs the benchmark harness
def test_bn_relu_fusion_prototype_matches_the_separate_ops():
    """The fused BatchNorm+ReLU prototype of `benchmarks/bn_relu_fusion.py` computes the separate ops'
    gradients bitwise (its timings are compared against them, so they must do the same work)."""
    from benchmarks import bn_relu_fusion

    result = bn_relu_fusion.main(["--shape", "4,3,3,8", "--repeats", "1", "--calls", "1"])
    assert result["max_gradient_difference"] == 0.0
    assert set(result["ms"]) == {"separate", "fused"} and all(len(v) == 1 for v in result["ms"].values())


@pytest.mark.slow  # runs the benchmark harness
def test_conv_breakdown_parts_compute_the_same_gradients_as_torch():
    """`benchmarks/conv_breakdown.py` times jaxnets' and torch's dx and dw of the same convolution: on a
    strided 3x3 conv (the cotangent of ones) the two agree to 1e-4 (float32 sums of 9 x 8 products)."""
    import torch

    from benchmarks import conv_breakdown as cb

    batch, size, cin, cout, k, stride = 2, 6, 8, 4, 3, 2
    torch.manual_seed(0)
    x = torch.randn(batch, cin, size, size)
    w = torch.randn(cout, cin, k, k) * 0.05
    dy = torch.ones(batch, cout, 3, 3)
    dx_t, dw_t, _ = torch.ops.aten.convolution_backward(dy, x, w, None, [stride] * 2, [1, 1], [1, 1], False,
                                                        [0, 0], 1, [True, True, False])
    xj, wj = jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), jnp.asarray(w.numpy().transpose(2, 3, 1, 0))
    y, vjp = jax.vjp(lambda x, w: cb.layers.conv(x, w, stride=stride, padding=k // 2), xj, wj)
    dx_j, dw_j = vjp(jnp.ones_like(y))
    np.testing.assert_allclose(np.asarray(dx_j).transpose(0, 3, 1, 2), dx_t.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(dw_j).transpose(3, 2, 0, 1), dw_t.numpy(), atol=1e-4)
    rows = cb.measure("torch", 1, 1, None)
    assert [r["conv"] for r in rows] == [c[0] for c in cb.CONVS] and "dx" not in rows[0]
    assert all(r[p] > 0 for r in rows[1:] for p in cb.PARTS)


@pytest.mark.slow  # runs the population benchmark's harness (R = 2, batch 8, one step)
def test_population_benchmark_smoke(tmp_path):
    from benchmarks import population

    assert population.main(["--quick", "--models", "lenet5", "--out", str(tmp_path)]) == 0
    (result,) = json.loads((tmp_path / "population.json").read_text())["results"]
    assert result["members"] == 2 and result["population_over_sequential"] > 0
    assert all(v > 0 for v in result["images_per_s"].values()) and "torch" in result["images_per_s"]
    assert population.main(["--quick", "--layers", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "population_layers.json").read_text())
