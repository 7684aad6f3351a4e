"""One measurement in a fresh process: `python -m benchmarks._worker '<json config>'` prints one JSON line.

A fresh process per measurement keeps compile caches, allocator state and memory high-water marks
from leaking between measurements. Config keys (all set by `run.py`):

  task: "train" | "infer" (throughput of one framework on one model), "fit" (jaxnets.train.fit
    against the bare step loop) or "pipeline" (jaxnets.data.Batches images/s).
  framework: "jaxnets", "jaxnets_folded" (infer only: BatchNorm folded into the convs with
    `layers.fold_batch_norm`), "jaxnets_refbn" (the unoptimised two-pass autodiff batch_norm), "jaxnets_plainconv"
    (convs on inputs smaller than the kernel without the explicit padding of `layers.conv`),
    "jaxnets_xladefault" (XLA's default compiler options instead of `train.default_compiler_options()`,
    i.e. convolutions through YNNPACK on CPU), "jaxnets_xlaops" (XLA's own convolution and max pooling where
    jaxnets has CPU formulations: `conv_formulations.cpu_formulations(False)`, `pooling.tiled_max_pool(False)`),
    "flax",
    "torch" (eager NCHW), "torch_cl" (eager channels-last), "torch_compile" (NCHW, Inductor).
  model: "lenet5" | "resnet18" | "vgg11_bn"; batch_size; warmup (untimed steps after compilation);
  min_steps, min_time, max_steps: timed steps run until at least `min_steps` AND `min_time` seconds
    (or `max_steps`).
  device: "cpu" (default) | "gpu": the JAX frameworks run on JAX's default device (run.py sets
    `JAX_PLATFORMS=cuda` for "gpu"; the worker checks that it got one), torch on `device="cuda"`.
  precision: "float32" (default) | "bfloat16": jaxnets' `precision="bfloat16"` policy (`compile_steps`,
    `TrainState.create`; inference casts the parameters and images as its eval step does), Flax modules
    with `dtype=bfloat16` (float32 parameters, the idiomatic Flax mixed precision), torch under
    `torch.autocast(device_type, dtype=torch.bfloat16)` around the forward pass and loss.

Timing: every timed step is synchronised (`block_until_ready`; torch's synchronous CPU ops, on a GPU
`torch.cuda.synchronize()` after each step and before the first), the clock is `time.perf_counter`.
Throughput = batch_size * steps / total time of the timed steps.
Compile time (JAX) = `jit(...).lower(...).compile()` wall time (tracing + XLA compilation); the first
call after it is reported separately (`first_call_s`, one execution, no recompilation). For
torch.compile, compile_s = first call - median timed step.

Memory: `peak_rss_mb` is the process's resident-set high-water mark (`VmHWM`, the same number as
`resource.getrusage(RUSAGE_SELF).ru_maxrss`), which includes the framework's own import footprint;
`peak_rss_delta_mb` is the high-water mark reached AFTER imports and input creation, minus the resident
size at that point (the HWM is reset with `/proc/self/clear_refs` where Linux allows it, else the
delta is against the import-time HWM). It measures the memory the measured model + step needs.
On a GPU, `device_peak_mb` is the device memory high-water mark of live buffers: JAX's
`device.memory_stats()["peak_bytes_in_use"]` (over the process: parameters, optimizer state, batch,
activations, scratch), torch's `torch.cuda.max_memory_allocated()` (reset before the model is built). Neither
counts the allocator's reserved-but-unused pool (JAX preallocates 75% of the GPU by default).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

SHAPES = {"lenet5": (28, 28, 1), "resnet18": (32, 32, 3), "vgg11_bn": (32, 32, 3)}
JAXNETS_NAMES = {"lenet5": ("lenet5", {}), "resnet18": ("resnet18", {"variant": "cifar"}),
                 "vgg11_bn": ("vgg11_bn", {"variant": "cifar"})}


# ----------------------------------------------------------------------------------------------
# memory and timing helpers
# ----------------------------------------------------------------------------------------------
def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the VmHWM high-water mark to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    hwm = _status_kb("VmHWM")
    if hwm is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return hwm / 1024


def _timed(run_one, cfg) -> list[float]:
    """Per-step seconds of synchronised steps, until min_steps and min_time (or max_steps) are reached."""
    times: list[float] = []
    start = time.perf_counter()
    while (len(times) < cfg["min_steps"]
           or (time.perf_counter() - start < cfg["min_time"] and len(times) < cfg["max_steps"])):
        t = time.perf_counter()
        run_one()
        times.append(time.perf_counter() - t)
    return times


def _summary(times: list[float], batch_size: int) -> dict:
    return {"step_times_s": times, "steps": len(times), "median_step_s": statistics.median(times),
            "images_per_s": batch_size * len(times) / sum(times)}


def _data(model: str, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((batch_size, *SHAPES[model]), dtype=np.float32)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    return images, labels


# ----------------------------------------------------------------------------------------------
# JAX frameworks
# ----------------------------------------------------------------------------------------------
def _jax_compile(lower, *args) -> float:
    """Seconds to compile `lower(*args)` (a jitted function's `.lower`, or `CompiledSteps.lower_train`)."""
    t = time.perf_counter()
    lower(*args).compile()
    return time.perf_counter() - t


# Layer switches entered for the rest of this worker process. Each context manager must stay referenced: one
# dropped after `__enter__()` is garbage-collected at once, and closing its generator runs the `finally` that
# restores the switch (which made the variants below measure the default path between 2026-12-07, when the
# switches became `layers.switch.Switch` context managers, and the fix).
_ENTERED: list = []


def _for_this_process(switch_block) -> None:
    switch_block.__enter__()
    _ENTERED.append(switch_block)


def _use_reference_batch_norm() -> None:
    """Route jaxnets' training-mode batch_norm through the unoptimised (autodiff, two-pass) path."""
    from jaxnets.layers import normalization
    _for_this_process(normalization.closed_form_derivative(False))


def _use_plain_conv() -> None:
    """Route every jaxnets conv through the plain `lax.conv_general_dilated`, also on inputs smaller than the
    kernel (XLA CPU's slow case, which `layers.conv` otherwise avoids by materialising the padding)."""
    import importlib
    _for_this_process(importlib.import_module("jaxnets.layers.conv").explicit_padding(False))


def _use_xla_ops() -> None:
    """XLA's own convolutions and `reduce_window` max pooling, also where jaxnets computes them another way on CPU
    (`layers/conv_formulations.py`: few input channels; `layers/pooling.py`: non-overlapping windows)."""
    import importlib
    _for_this_process(importlib.import_module("jaxnets.layers.conv_formulations").cpu_formulations(False))
    _for_this_process(importlib.import_module("jaxnets.layers.pooling").tiled_max_pool(False))


def _fold_interceptor_parts(model, variables, x):
    """Find every jaxnets Conv whose output feeds straight into a jaxnets BatchNorm (one traced call).

    Returns `(pairs, folded)`: `pairs` maps the conv's module path to the BN's path, `folded` maps the
    conv's path to `(kernel', bias')` from `layers.fold_batch_norm` (the BN's eps)."""
    import jax
    import flax.linen as nn
    from jaxnets import nn as jnn
    from jaxnets.layers import fold_batch_norm

    calls = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, (jnn.Conv, jnn.BatchNorm)):
            calls.append((context.module, args[0] if args else kwargs["x"], out))
        return out

    with nn.intercept_methods(record):
        model.apply(variables, x, train=False)
    pairs = {}
    for conv, _, conv_out in (c for c in calls if isinstance(c[0], jnn.Conv)):
        for bn, bn_in, _ in (c for c in calls if isinstance(c[0], jnn.BatchNorm)):
            if bn_in is conv_out and conv.layout == bn.layout == "NHWC":
                pairs[conv.scope.path] = (bn.scope.path, bn.eps)
    folded = {}

    def get(tree, path):
        for p in path:
            tree = tree[p]
        return tree

    for conv_path, (bn_path, eps) in pairs.items():
        cp, bp, bs = (get(variables["params"], conv_path), get(variables["params"], bn_path),
                      get(variables["batch_stats"], bn_path))
        folded["/".join(conv_path)] = fold_batch_norm(cp["kernel"], cp.get("bias"), bp, bs, eps=eps, kernel_layout="HWIO")
    del jax
    return {"/".join(b[0]) for b in pairs.values()}, folded


def _folded_predict(model, variables, x, compiler_options=None, *, policy=None):
    """Inference with every Conv->BatchNorm pair replaced by one conv with folded kernel and bias.

    With a `jaxnets.train.Policy`, the parameters, folded kernels and images are cast to its compute dtype
    (folding itself is done in float32) and the logits to its output dtype."""
    import jax
    import flax.linen as nn
    from jaxnets import nn as jnn
    from jaxnets.layers import conv as conv_fn

    folded_bns, folded = _fold_interceptor_parts(model, variables, x)

    def predict(variables, folded, images):
        def swap(next_fun, args, kwargs, context):
            module, path = context.module, "/".join(context.module.scope.path) if context.module.scope else ""
            if context.method_name == "__call__" and isinstance(module, jnn.Conv) and path in folded:
                k, b = folded[path]
                return conv_fn(args[0], k, b, stride=module.stride, padding=module.padding,
                               dilation=module.dilation, groups=module.groups, layout=module.layout)
            if context.method_name == "__call__" and isinstance(module, jnn.BatchNorm) and path in folded_bns:
                return args[0]
            return next_fun(*args, **kwargs)

        if policy is not None:
            variables = {**variables, "params": policy.cast_to_compute(variables["params"])}
            folded, images = policy.cast_to_compute(folded), policy.cast_to_compute(images)
        with nn.intercept_methods(swap):
            logits = model.apply(variables, images, train=False)
        return logits if policy is None else policy.cast_to_output(logits)

    return jax.jit(predict, compiler_options=compiler_options), folded


def _jax_device(cfg) -> dict:
    """The device JAX computes on, checked against `cfg["device"]`: `{"device_kind": ...}`."""
    import jax

    device = jax.devices()[0]
    want = cfg.get("device", "cpu")
    if (device.platform == "gpu") != (want == "gpu"):
        raise RuntimeError(f"benchmark worker: asked for device {want!r} but JAX's default device is "
                           f"{device.platform} ({device.device_kind}); "
                           f"JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS')!r}")
    return {"device_kind": device.device_kind}


def _jax_device_peak_mb() -> float | None:
    """JAX's device-memory high-water mark in MiB (None on CPU, which keeps no such statistics)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None


def run_jax(cfg) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    fw, model_name, task = cfg["framework"], cfg["model"], cfg["task"]
    bf16 = cfg.get("precision", "float32") == "bfloat16"
    images, labels = _data(model_name, cfg["batch_size"])
    out: dict = _jax_device(cfg)
    if fw.startswith("jaxnets"):
        from jaxnets import models
        from jaxnets.train import TrainState, compile_steps, default_compiler_options, optimizer
        from jaxnets.train.precision import as_policy
        # None keeps the float32 step bit for bit; "bfloat16" is the policy fit(precision="bfloat16") uses
        precision = "bfloat16" if bf16 else None
        policy = as_policy("benchmark", precision)
        # jaxnets compiles its steps with default_compiler_options() ("auto"); inference is the user's own jit,
        # given the same options as the library recommends (README "Training"). The variant: XLA's defaults.
        compiler_options = None if fw == "jaxnets_xladefault" else default_compiler_options()
        if fw == "jaxnets_refbn":
            _use_reference_batch_norm()
        if fw == "jaxnets_plainconv":
            _use_plain_conv()
        if fw == "jaxnets_xlaops":
            _use_xla_ops()
        name, opts = JAXNETS_NAMES[model_name]
        model = models.create(name, **opts)
        state = TrainState.create(model, optimizer("sgd", learning_rate=0.01, momentum=0.9), images[:1], seed=0,
                                  precision=precision)
        batch = jax.device_put({"image": images, "label": labels})
        if task == "train":
            steps = compile_steps("none", compiler_options=compiler_options, precision=precision)
            out["compiler_options"] = steps.compiler_options
            holder = [steps.put_state(state)]
            out["compile_s"] = _jax_compile(steps.lower_train, holder[0], batch)  # compilation alone

            def one():
                holder[0], metrics = steps.train(holder[0], batch)
                metrics["loss"].block_until_ready()
        else:
            variables = state.variables
            if fw == "jaxnets_folded":
                predict, folded = _folded_predict(model, variables, images[:1], compiler_options, policy=policy)
                args = (variables, folded, batch["image"])
                out["folded_convs"] = len(folded)
            else:
                # as make_eval_step: parameters and images in the compute dtype, BN statistics as stored,
                # logits in the output dtype (all casts are no-ops for float32)
                def apply(v, x):
                    v = {**v, "params": policy.cast_to_compute(v["params"])}
                    return policy.cast_to_output(model.apply(v, policy.cast_to_compute(x), train=False))

                predict = jax.jit(apply, compiler_options=compiler_options)
                args = (variables, batch["image"])
            out["compiler_options"] = compiler_options
            out["compile_s"] = _jax_compile(predict.lower, *args)

            def one():
                predict(*args).block_until_ready()
    else:  # raw flax
        from benchmarks import flax_baselines as fb
        model = fb.create(model_name, dtype=jnp.bfloat16 if bf16 else jnp.float32)
        tx = optax.sgd(0.01, momentum=0.9)
        state = fb.init(model, images, tx)
        x, y = jax.device_put(images), jax.device_put(labels)
        if task == "train":
            step = fb.make_train_step(model, tx)
            out["compile_s"] = _jax_compile(step.lower, state, x, y)
            holder = [state]

            def one():
                holder[0], loss = step(holder[0], x, y)
                loss.block_until_ready()
        else:
            predict = fb.make_predict(model)
            variables = {"params": state["params"], **({"batch_stats": state["batch_stats"]}
                                                         if state["batch_stats"] else {})}
            out["compile_s"] = _jax_compile(predict.lower, variables, x)

            def one():
                predict(variables, x).block_until_ready()
    out["param_count"] = int(sum(np.size(p) for p in jax.tree.leaves(state["params"] if isinstance(state, dict)
                                                                      else state.params)))
    t = time.perf_counter()
    one()
    out["first_call_s"] = time.perf_counter() - t
    for _ in range(cfg["warmup"]):
        one()
    out.update(_summary(_timed(one, cfg), cfg["batch_size"]))
    out["device_peak_mb"] = _jax_device_peak_mb()
    return out


# ----------------------------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------------------------
def run_torch(cfg) -> dict:
    import torch

    from benchmarks import torch_baselines as tb
    fw, model_name, task = cfg["framework"], cfg["model"], cfg["task"]
    channels_last, compile_ = fw == "torch_cl", fw == "torch_compile"
    gpu = cfg.get("device", "cpu") == "gpu"
    device = "cuda" if gpu else "cpu"
    amp_dtype = torch.bfloat16 if cfg.get("precision", "float32") == "bfloat16" else None
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    images, labels = _data(model_name, cfg["batch_size"])
    model = tb.create(model_name, channels_last=channels_last, device=device)
    x = tb.to_input(images, channels_last=channels_last, device=device)
    y = torch.from_numpy(labels).long().to(device)
    out: dict = {"param_count": int(sum(p.numel() for p in model.parameters())),
                 "torch_threads": torch.get_num_threads(),
                 "device_kind": torch.cuda.get_device_name() if gpu else "cpu"}
    if task == "train":
        run = tb.make_train_step(model, compile=compile_, amp_dtype=amp_dtype)
        args = (x, y)  # CPU ops are synchronous: the loss is computed on return
    else:
        run = tb.make_predict(model, compile=compile_, amp_dtype=amp_dtype)
        args = (x,)
    if gpu:
        def one():
            run(*args)
            torch.cuda.synchronize()

        torch.cuda.synchronize()
    else:
        def one():
            run(*args)
    t = time.perf_counter()
    one()
    out["first_call_s"] = time.perf_counter() - t
    for _ in range(cfg["warmup"]):
        one()
    out.update(_summary(_timed(one, cfg), cfg["batch_size"]))
    out["compile_s"] = out["first_call_s"] - out["median_step_s"] if compile_ else None
    out["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    return out


# ----------------------------------------------------------------------------------------------
# fit overhead and input pipeline
# ----------------------------------------------------------------------------------------------
def run_fit(cfg) -> dict:
    """Per-epoch seconds of `jaxnets.train.fit` against a bare loop of the same compiled step on the same batches.

    LeNet-5 on the 5,000 bundled MNIST digits (the shortest steps, so the worst case for a loop's
    overhead). Bare loop: `Batches.epoch(e)` -> `steps.train` -> metrics summed on device, one fetch per
    epoch. fit: `epochs` epochs, timed between `on_epoch_end` calls (epoch 1, which compiles, dropped).
    Order: bare, fit, bare, so drift hits both."""
    import jax

    from jaxnets import data, models
    from jaxnets.train import TrainState, compile_steps, fit, optimizer

    epochs = cfg["epochs"]
    mnist = data.mnist_sample()
    if cfg.get("examples"):
        mnist = {k: v[:cfg["examples"]] for k, v in mnist.items()}
    model = models.create("lenet5")
    tx = optimizer("sgd", learning_rate=0.01, momentum=0.9)
    batches = data.Batches(mnist, cfg["batch_size"], seed=0)
    steps = compile_steps("none")

    def bare(first_epoch: int) -> list[float]:
        state = steps.put_state(TrainState.create(model, tx, mnist["image"][:1], seed=0))
        times = []
        for e in range(first_epoch, first_epoch + epochs):
            t = time.perf_counter()
            total = None
            for batch in batches.epoch(e):
                state, m = steps.train(state, steps.put_batch(batch))
                total = m if total is None else jax.tree.map(jax.numpy.add, total, m)
            jax.device_get(total)
            times.append(time.perf_counter() - t)
        return times[1:]  # epoch 1 compiles

    def with_fit() -> list[float]:
        marks = [time.perf_counter()]
        fit(model, mnist, epochs=epochs, batch_size=cfg["batch_size"], optimizer=tx, seed=0, progress=False,
            parallel="none", on_epoch_end=lambda epoch, history: marks.append(time.perf_counter()))
        return [b - a for a, b in zip(marks[1:], marks[2:])]

    bare_1, fit_s, bare_2 = bare(0), with_fit(), bare(0)
    bare_s = bare_1 + bare_2
    return {"bare_epoch_s": bare_s, "fit_epoch_s": fit_s, "batches_per_epoch": len(batches),
            "median_bare_s": statistics.median(bare_s), "median_fit_s": statistics.median(fit_s),
            "fit_overhead": statistics.median(fit_s) / statistics.median(bare_s) - 1}


def run_pipeline(cfg) -> dict:
    """Images/s that `jaxnets.data.Batches` delivers (shuffled, prefetch 2), to host and onto the device."""
    import jax

    from jaxnets import data

    out = {}
    rng = np.random.default_rng(0)
    sets = {"mnist_5k": data.mnist_sample(),
            "cifar_shaped_10k": {"image": rng.integers(0, 256, (cfg["examples"], 32, 32, 3), dtype=np.uint8),
                                 "label": rng.integers(0, 10, cfg["examples"]).astype(np.int32)}}
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for name, arrays in sets.items():
        for placement, sharding in (("host", None), ("device", device)):
            batches = data.Batches(arrays, cfg["batch_size"], seed=0, sharding=sharding)
            rates = []
            for e in range(cfg["epochs"]):
                t, n = time.perf_counter(), 0
                for batch in batches.epoch(e):
                    jax.block_until_ready(batch)
                    n += len(batch["label"])
                rates.append(n / (time.perf_counter() - t))
            out[f"{name}_{placement}_images_per_s"] = statistics.median(rates)
    return out


# ----------------------------------------------------------------------------------------------
def main(cfg: dict) -> dict:
    import importlib.metadata as md
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "torch", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    if cfg["task"] in ("train", "infer"):
        runner = run_torch if cfg["framework"].startswith("torch") else run_jax
        import_mod = "torch" if runner is run_torch else "jax"
    else:
        runner, import_mod = {"fit": run_fit, "pipeline": run_pipeline}[cfg["task"]], "jax"
    __import__(import_mod)
    # Resident size once the framework is imported; the delta below is what the measured work adds.
    base_mb = _status_kb("VmRSS") / 1024 if _status_kb("VmRSS") else None
    reset = _reset_peak()
    t = time.perf_counter()
    result = runner(cfg)
    result.update(config=cfg, wall_s=time.perf_counter() - t, versions=versions,
                  xla_flags=os.environ.get("XLA_FLAGS", ""),
                  env={k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES", "XLA_FLAGS"))}, python=platform.python_version(),
                  peak_rss_mb=_peak_mb(), rss_after_import_mb=base_mb, hwm_reset=reset,
                  peak_rss_delta_mb=None if base_mb is None else _peak_mb() - base_mb,
                  loadavg_1m=os.getloadavg()[0])
    return result


if __name__ == "__main__":
    print("BENCHMARK_RESULT " + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
