"""Smoke test of the benchmark harness (`python -m benchmarks.run --quick`): the result files are well
formed and the folded-BatchNorm inference path computes the same logits. No timing assertions: the
numbers of a batch-8, two-step run on a shared machine mean nothing."""
import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import _worker, batch_scaling, gpu_quick, run
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
    assert data["device"] == "cpu" and data["precision"] == "float32" and data["note"] is None
    assert set(data["machine"]) >= {"cpu", "cores", "date"}
    assert len(data["runs"]) == 3
    for r in data["runs"]:
        assert "error" not in r, r.get("error")
        assert r["config"]["task"] == "train" and r["steps"] == 2 and len(r["step_times_s"]) == 2
        assert r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["param_count"] == 61_706
        assert r["versions"]["jax"] and r["versions"]["torch"]
        assert r["config"]["device"] == "cpu" and r["config"]["precision"] == "float32"
        assert r["device_kind"] and r["device_peak_mb"] is None  # no device-memory statistics on a CPU
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


# ----------------------------------------------------------------------------------------------
# --device and --precision: what would reach the workers (no GPU needed)
# ----------------------------------------------------------------------------------------------
def test_device_and_precision_arguments():
    args = run.parse_args([])
    assert args.device == "cpu" and args.precisions == ("float32",)
    args = run.parse_args(["--device", "gpu", "--precision", "float32,bfloat16", "--frameworks", "jaxnets,torch_cl"])
    assert args.device == "gpu" and args.precisions == ("float32", "bfloat16")
    assert args.frameworks == ("jaxnets", "torch_cl")
    assert run.parse_args(["--precision", "bfloat16", "--frameworks", "jaxnets,flax"]).precisions == ("bfloat16",)


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--precision", "float16"], r"--precision: unknown \['float16'\]"),
    (["--precision", "bfloat16", "--frameworks", "jaxnets,torch_cl"], "JAX frameworks only.*torch_cl"),
])
def test_bad_device_and_precision_arguments_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        run.parse_args(argv)
    assert re.search(message, capsys.readouterr().err)


def test_worker_env_gives_jax_workers_their_platform_and_flags():
    env = run.worker_env("jaxnets", device="gpu", xla_flags="--xla_dump_to=/tmp/x", common_env={"A": "1"})
    assert env == {"A": "1", "JAX_PLATFORMS": "cuda", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert run.worker_env("flax", device="cpu") == {"JAX_PLATFORMS": "cpu"}
    # torch workers get neither JAX's platform nor its flags, on either device
    for device in run.DEVICES:
        assert run.worker_env("torch_cl", device=device, xla_flags="--x", common_env={"A": "1"}) == {"A": "1"}


def test_worker_config_carries_device_and_precision():
    cfg = run.worker_config("train", "torch_cl", "resnet18", device="gpu", precision="bfloat16", batch_size=128,
                            warmup=5, min_steps=10, min_time=0.5, max_steps=500, repeat=0)
    assert cfg["device"] == "gpu" and cfg["precision"] == "bfloat16" and cfg["framework"] == "torch_cl"
    assert json.loads(json.dumps(cfg)) == cfg  # it travels to the worker as JSON


def test_result_names_keep_cpu_float32_tables_apart():
    assert run.result_name("resnet18") == "resnet18"
    assert run.result_name("resnet18", device="gpu", precision="bfloat16", tag="quick") == "resnet18_gpu_bfloat16_quick"
    assert run.result_name("lenet5", precision="bfloat16") == "lenet5_cpu_bfloat16"


def test_gpu_table_names_the_device_and_reports_device_memory():
    def stats(v):
        return {"median": v, "min": v, "max": v, "n": 1}

    summary = {"train": {"jaxnets": {"images_per_s": stats(1000.0), "compile_s": stats(2.0),
                                     "peak_rss_mb": stats(900.0), "peak_rss_delta_mb": stats(100.0),
                                     "device_peak_mb": stats(1234.0), "jaxnets_over_this": 1.0}}}
    text = run.table("resnet18", summary, device="gpu", precision="bfloat16", device_kind="NVIDIA H100")
    assert text.startswith("### resnet18: gpu (NVIDIA H100), bfloat16")
    assert "peak device MB" in text and "| 1,234 |" in text
    assert "| 900 (100) |" in run.table("resnet18", summary)


_NO_GPU = {"jax_version": "0.10.2", "jax_cuda_plugins": [], "jax_error": "RuntimeError: Unknown backend: 'cuda'",
           "torch_version": "2.13.0+cpu", "torch_cuda": None, "torch_devices": []}


@pytest.mark.parametrize("probe, jax_needed, torch_needed, expected", [
    (_NO_GPU, True, True, ["no CUDA jaxlib", "CPU-only wheel"]),
    (_NO_GPU, True, False, ["no CUDA jaxlib"]),
    (_NO_GPU, False, True, ["CPU-only wheel"]),
    ({**_NO_GPU, "jax_cuda_plugins": ["jax-cuda13-plugin"], "torch_version": "2.13.0+cu128", "torch_cuda": "12.8"},
     True, True, ["found no GPU", "sees no GPU"]),
    ({"torch_error": "ImportError: No module named 'torch'", **{k: v for k, v in _NO_GPU.items() if "torch" not in k}},
     False, True, ["PyTorch is not importable"]),
    ({**_NO_GPU, "jax_devices": ["NVIDIA H100"], "torch_cuda": "12.8", "torch_devices": ["NVIDIA H100"]},
     True, True, []),
    ({"probe_error": "Segmentation fault"}, True, True, ["GPU probe failed"]),
])
def test_gpu_problems_name_what_is_missing_and_the_fix(probe, jax_needed, torch_needed, expected):
    problems = run.gpu_problems(probe, jax_needed=jax_needed, torch_needed=torch_needed)
    assert len(problems) == len(expected)
    for problem, phrase in zip(problems, expected):
        assert phrase in problem
        if "CUDA jaxlib" in phrase:
            assert 'pip install -U "jax[cuda13]"' in problem
        if "CPU-only" in phrase:
            assert "download.pytorch.org/whl/cu" in problem


@pytest.fixture(scope="module")
def local_probe():
    """What this machine's JAX and torch see (one fresh interpreter)."""
    return run.probe_gpu()


@pytest.mark.slow  # imports jax and torch in a subprocess
def test_device_gpu_without_a_gpu_exits_with_one_line(local_probe, monkeypatch, tmp_path, capsys):
    """`--device gpu` here (no GPU, CPU torch wheel) stops before any worker with one line naming both gaps;
    the quick GPU script takes the same path."""
    if local_probe.get("jax_devices") and local_probe.get("torch_devices"):
        pytest.skip("both frameworks see a GPU here")
    monkeypatch.setattr(run, "probe_gpu", lambda **kwargs: local_probe)
    monkeypatch.setattr(run, "run_worker", lambda *a, **k: pytest.fail("a worker ran without a GPU"))
    for main in (lambda: run.main(["--device", "gpu", "--quick", "--model", "lenet5", "--out", str(tmp_path)]),
                 lambda: gpu_quick.main(["--out", str(tmp_path)])):
        with pytest.raises(SystemExit) as exit_info:
            main()
        message = str(exit_info.value.code)
        assert message.startswith("benchmarks.run: --device gpu needs a GPU") and "\n" not in message
        if not local_probe.get("jax_devices"):
            assert "jax" in message.lower() and "pip install" in message
        if local_probe.get("torch_cuda") is None:
            assert "CPU-only wheel" in message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_gpu_quick_arguments_are_the_promised_table():
    args = run.parse_args(list(gpu_quick.ARGS))
    assert args.device == "gpu" and args.precisions == ("float32", "bfloat16")
    assert args.models == run.MODELS and args.tasks == ("train", "infer")
    assert args.frameworks == ("jaxnets", "flax", "torch_cl") and args.batch_size == 128 and args.repeats == 1
    assert run.parse_args([*gpu_quick.ARGS, "--model", "resnet18"]).models == ("resnet18",)  # overridable


# ----------------------------------------------------------------------------------------------
# bfloat16 paths (on the CPU: numerics, not speed)
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow  # compiles LeNet-5 steps in this process
@pytest.mark.parametrize("framework, task", [("jaxnets", "train"), ("jaxnets", "infer")])
def test_jax_workers_run_bfloat16(framework, task):
    cfg = run.worker_config(task, framework, "lenet5", device="cpu", precision="bfloat16", batch_size=8, warmup=0,
                            min_steps=1, min_time=0.0, max_steps=1, repeat=0)
    result = _worker.run_jax(cfg)
    assert result["steps"] == 1 and result["images_per_s"] > 0 and result["param_count"] == 61_706
    assert result["device_kind"] and result["device_peak_mb"] is None


def test_batch_scaling_curves_and_plot(tmp_path):
    def result(fw, b, ips):
        return {"config": {"framework": fw, "batch_size": b}, "images_per_s": ips}
    runs = [result("jaxnets", 32, 100.0), result("jaxnets", 32, 300.0), result("torch_cl", 32, 400.0),
            result("jaxnets", 64, 500.0), result("torch_cl", 64, 250.0), result("torch_cl", 64, 350.0),
            {"config": {"framework": "jaxnets", "batch_size": 64}, "error": "timeout"}]  # errors are left out
    summary = batch_scaling.curves(runs)
    assert summary["jaxnets"][32] == {"median": 200.0, "min": 100.0, "max": 300.0, "n": 2}
    assert summary["torch_cl"][64] == {"median": 300.0, "min": 250.0, "max": 350.0, "n": 2}
    assert summary["ratio"] == {32: 0.5, 64: 500.0 / 300.0}
    batch_scaling.plot("lenet5", summary, str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("use, switch", [
    ("_use_xla_ops", ("jaxnets.layers.conv_formulations", "_CPU_FORMULATIONS")),
    ("_use_xla_ops", ("jaxnets.layers.pooling", "_TILED")),
    ("_use_plain_conv", ("jaxnets.layers.conv", "_EXPLICIT_PADDING")),
    ("_use_reference_batch_norm", ("jaxnets.layers.normalization", "_FAST_TRAIN_PATH"))])
def test_benchmark_variants_turn_their_switch_off_for_the_process(use, switch, monkeypatch):
    import importlib
    state = getattr(importlib.import_module(switch[0]), switch[1])
    monkeypatch.setattr(state, "enabled", True)  # restored after the test
    monkeypatch.setattr(_worker, "_ENTERED", [])
    getattr(_worker, use)()
    import gc
    gc.collect()  # a context manager dropped after __enter__ would restore the switch here
    assert state.enabled is False


def test_jax_worker_refuses_a_device_it_did_not_get():
    with pytest.raises(RuntimeError, match="asked for device 'gpu'"):
        _worker._jax_device({"device": "gpu"})


def test_flax_baseline_computes_in_its_dtype_with_float32_parameters(rng):
    from benchmarks import flax_baselines as fb

    x = jnp.asarray(rng.normal(size=(2, 28, 28, 1)).astype(np.float32))
    model = fb.create("lenet5", dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), x, train=False)
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert model.apply(variables, x, train=False).dtype == jnp.bfloat16
    reference = fb.create("lenet5").apply(variables, x, train=False)
    assert reference.dtype == jnp.float32
    np.testing.assert_allclose(fb.make_predict(model)(variables, x), reference, rtol=0.05, atol=0.02)


def test_torch_baseline_autocasts_forward_and_keeps_float32_parameters():
    import torch

    from benchmarks import torch_baselines as tb

    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    model = tb.create("lenet5", channels_last=True, device="cpu")
    x = tb.to_input(images, channels_last=True, device="cpu")
    assert tb.make_predict(model, amp_dtype=torch.bfloat16)(x).dtype == torch.bfloat16
    assert tb.make_predict(model)(x).dtype == torch.float32
    before = [p.detach().clone() for p in model.parameters()]
    loss = tb.make_train_step(model, amp_dtype=torch.bfloat16)(x, torch.tensor([0, 1, 2, 3]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)  # cross_entropy autocasts to float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


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
    # bfloat16: parameters, folded kernels and images in bfloat16, logits back in float32
    from jaxnets.train import Policy
    predict_bf16, _ = _worker._folded_predict(model, variables, x[:1], policy=Policy("bfloat16"))
    logits = predict_bf16(variables, folded, x)
    assert logits.dtype == jnp.float32
    reference = model.apply(variables, x, train=False)
    np.testing.assert_allclose(logits, reference, rtol=0.05, atol=0.05)
    assert not np.array_equal(logits, reference)  # it did compute in bfloat16


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
