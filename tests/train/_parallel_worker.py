"""Subprocess of tests/train/test_parallel.py: run every data-parallel mode on simulated CPU devices.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python _parallel_worker.py OUT.npz [float16]
Writes, for each mode ("none" on one device, then "sharded", "shard_map", "pmap" on all devices) and each
case ("full": 5 batches of 16; "ragged": 5 batches of 13/11/13/9/13 rows, padded to 16 by put_batch),
the final params and batch_stats ("<mode>/<case>/<path>"), the per-step train metrics
("<mode>/<case>/metrics/<name>"), the last eval metrics ("<mode>/<case>/eval/<name>") and how put_batch
padded a 13-row batch ("<mode>/ragged/put_batch/..."). "none/zero_padded" is the negative control: the
ragged batches padded with zero rows but no mask, which must NOT match. "init/<path>": the initial state.
With "float16" (tests/train/test_precision.py) every run trains in float16 with a dynamic loss scale that
starts high enough to overflow (`FLOAT16_LOSS_SCALE`) and records the scale after every step
("<mode>/<case>/loss_scale"; for pmap also every device's copy, "<mode>/<case>/loss_scale_per_device");
the negative control is not run.
"""
import sys

import jax
import numpy as np

import _tiny
from jaxnets.train.parallel import compile_steps
from jaxnets.train.precision import DynamicLossScale

jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
CASES = {"full": [16] * 5, "ragged": [13, 11, 13, 9, 13]}
# The first step overflows float16 clearly (the logits' cotangent alone is ~0.8 * 2^21 / 16 > 65504) and is
# skipped; the scale then backs off to 2^16 and grows to 2^17 and 2^18, well below where this net's gradients
# overflow (~2^18 to 2^19, where the float16 rounding of each mode could decide either way).
FLOAT16_LOSS_SCALE = dict(init_scale=2.0 ** 21, backoff_factor=2.0 ** -5, growth_interval=2)


def run(mode: str, sizes: list[int], *, zero_pad: bool = False, precision: str | None = None) -> dict:
    """Train 5 steps; `zero_pad`: pad batches with zero rows WITHOUT a mask (the negative control)."""
    devices = jax.devices()[:1] if mode == "none" else jax.devices()
    steps = compile_steps(mode, devices=devices, precision=precision)
    options = {} if precision is None else dict(precision=precision,
                                                loss_scale=DynamicLossScale.create(**FLOAT16_LOSS_SCALE))
    state = steps.put_state(_tiny.new_state(axis_name=steps.axis_name, **options))
    out, history, scales = {}, [], []
    for size, batch in zip(sizes, _tiny.data(len(sizes), 16, seed=1)):
        rows = {k: v[:size] for k, v in batch.items()}
        if zero_pad:
            rows = {k: np.concatenate([v, np.zeros((16 - size,) + v.shape[1:], v.dtype)]) for k, v in rows.items()}
        placed = steps.put_batch(rows)
        if size == 13 and mode != "none":  # how put_batch padded the 13 rows for 8 devices
            out["put_batch/mask"] = np.asarray(placed["mask"]).reshape(-1)
            out["put_batch/shape"] = np.array(placed["image"].shape)
        state, metrics = steps.train(state, placed)
        history.append(metrics)
        if precision is not None:
            scales.append(np.asarray(state.loss_scale.scale))
        evaluated = steps.eval(state, placed)
    for name in ("loss", "correct", "count"):
        out[f"metrics/{name}"] = np.array([np.asarray(m[name]) for m in history])
        out[f"eval/{name}"] = np.asarray(evaluated[name])
    if precision is not None:
        out["loss_scale"] = np.stack([s if s.ndim == 0 else s[0] for s in scales])
        if mode == "pmap":
            out["loss_scale_per_device"] = np.stack(scales)
    out.update(_tiny.to_numpy(steps.get_state(state)))
    return out


def main(path: str, precision: str | None = None) -> None:
    assert jax.device_count() == 8, jax.devices()
    results = {}
    for mode in ("none", "sharded", "shard_map", "pmap"):
        for case, sizes in CASES.items():
            results.update({f"{mode}/{case}/{k}": v for k, v in run(mode, sizes, precision=precision).items()})
    if precision is not None:
        np.savez(path, **results)
        return
    results.update({f"init/{k}": v for k, v in _tiny.to_numpy(_tiny.new_state()).items()})
    # Negative control: the ragged batches zero-padded to 16 rows but unmasked (reuses the "full" program).
    results.update({f"none/zero_padded/{k}": v for k, v in run("none", CASES["ragged"], zero_pad=True).items()})
    np.savez(path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
