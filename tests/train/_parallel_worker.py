"""Subprocess of tests/train/test_parallel.py: run every data-parallel mode on simulated CPU devices.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python _parallel_worker.py OUT.npz
Writes, for each mode ("none" on one device, then "sharded", "shard_map", "pmap" on all devices) and each
case ("full": 5 batches of 16; "ragged": 5 batches of 13/11/13/9/13 rows, padded to 16 by put_batch),
the final params and batch_stats ("<mode>/<case>/<path>"), the per-step train metrics and the eval
metrics ("<mode>/<case>/metrics/<name>", one value per step).
"""
import sys

import jax
import numpy as np

import _tiny
from jaxnets.train.parallel import compile_steps

jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
CASES = {"full": [16] * 5, "ragged": [13, 11, 13, 9, 13]}


def run(mode: str, sizes: list[int]) -> dict:
    devices = jax.devices()[:1] if mode == "none" else jax.devices()
    steps = compile_steps(mode, devices=devices)
    state = steps.put_state(_tiny.new_state(axis_name=steps.axis_name))
    out, history = {}, []
    for size, batch in zip(sizes, _tiny.data(len(sizes), 16, seed=1)):
        placed = steps.put_batch({k: v[:size] for k, v in batch.items()})
        state, metrics = steps.train(state, placed)
        history.append(metrics)
        evaluated = steps.eval(state, placed)
    for name in ("loss", "correct", "count"):
        out[f"metrics/{name}"] = np.array([np.asarray(m[name]) for m in history])
        out[f"eval/{name}"] = np.asarray(evaluated[name])
    out.update(_tiny.to_numpy(steps.get_state(state)))
    return out


def main(path: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    results = {}
    for mode in ("none", "sharded", "shard_map", "pmap"):
        for case, sizes in CASES.items():
            results.update({f"{mode}/{case}/{k}": v for k, v in run(mode, sizes).items()})
    np.savez(path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
