"""The benchmark table on one GPU in a few minutes: three models, train and infer, jaxnets vs Flax vs torch_cl.

Run (from the repository root, on a machine with one NVIDIA GPU, a CUDA jaxlib and a CUDA torch wheel):

    python -m benchmarks.gpu_quick                         # -> benchmarks/results/<model>_gpu_<precision>_quick.json
    python -m benchmarks.gpu_quick --model resnet18 --out /tmp/gpu   # any benchmarks.run option overrides ours

It is `python -m benchmarks.run` with the arguments in `ARGS`: `--device gpu`, float32 and bfloat16,
LeNet-5, ResNet-18 and VGG-11-BN (CIFAR), batch 128, jaxnets / raw Flax / PyTorch eager channels-last on
CUDA, one process per (model, precision, task, framework) with 5 warm-up steps and at least 10 timed steps
and 0.5 s. Without a GPU visible to both frameworks it stops at once with one line saying what is missing.
One repeat: the table shows orders of magnitude and clear gaps; for numbers to quote, rerun a model with
`--repeats 3 --min-time 3` (no `--tag quick`).

Time budget (an estimate: no GPU has run it yet). 36 worker processes (3 models x 2 precisions x 2 tasks x
3 frameworks) plus one probe process:
- start-up: Python + JAX/jaxnets imports + CUDA plugin and context, about 4 s per JAX process (24 of them);
  torch import + CUDA context, about 3 s per torch process (12): about 130 s;
- XLA compilation on the GPU, conv autotuning included: about 1.5 + 0.5 s (LeNet-5 train + infer), 10 + 3 s
  (ResNet-18), 6 + 2 s (VGG-11-BN) per JAX framework and precision, so about 23 s x 4 = 90 s;
- timed work: first call + 5 warm-up steps + max(10 steps, 0.5 s): ResNet-18 steps take a few ms at batch
  128 on an H100 (about 214 GFLOP per training step), LeNet-5's well under one ms (500 steps at most), so
  about 1 s per process, 36 s in all; the probe, 5 s.
Total about 260 s, 4-5 minutes on an H100; the largest uncertainty is XLA's GPU compile time. If it runs
over, `--model resnet18` (the model the goals are about) takes about a third of it.

What we expect, and why (predictions, to be replaced by the measured table):
- The CPU story does not carry over. On the CPU the gaps come from XLA CPU's convolution kernels (YNNPACK vs
  Eigen, the strided data gradients) against oneDNN; on a GPU both frameworks call cuDNN/cuBLAS for the
  convolutions and matmuls, and both let float32 convolutions use TF32 by default (torch:
  `torch.backends.cudnn.allow_tf32=True`, its matmuls stay float32; JAX: the default matmul/conv precision,
  TF32 on recent GPUs, docs.jax.dev "Matmul precision"), so float32 is in effect a TF32 table.
  `default_compiler_options()` is None on GPU: jaxnets and Flax compile with XLA's defaults.
- ResNet-18 / VGG-11-BN training at batch 128 on 32x32 images: the convolutions take perhaps 1-2 ms of a
  step; the rest is memory traffic of BatchNorm, ReLU, residual adds and the SGD update. XLA fuses these
  into a few kernels (and the optimizer update into one or two), torch eager runs each as its own kernel and
  launches a few hundred kernels per step, so we expect jaxnets (and Flax) ahead of torch_cl in training,
  about 1.2-1.6x, and closer in inference (fewer kernels, no backward), about 1.0-1.4x.
- LeNet-5 is launch- and dispatch-bound on any GPU: one XLA executable per step against ~50 eager kernel
  launches plus Python's optimizer loop, so jaxnets 2-4x torch_cl; bfloat16 buys nothing there (the casts
  may even cost).
- bfloat16: halves activation traffic and doubles tensor-core throughput, so about 1.4-1.8x float32 for
  ResNet-18 and VGG-11-BN in both frameworks; torch's autocast re-casts the weights every step in separate
  kernels, jaxnets' policy casts them inside the fused step, so the jaxnets/torch ratio should not shrink.
- jaxnets / Flax about 1.0 (0.95-1.05): the same XLA program up to jaxnets' layer formulations.
- Compile: seconds (ResNet-18 training step perhaps 5-20 s with autotuning) for the JAX frameworks, none for
  torch eager. Memory: device peaks of the same order for all three (parameters, momentum, activations);
  bfloat16 lowers them by roughly a third.
- Defaults that differ, kept as users meet them: torch's `cudnn.benchmark` is False (heuristic algorithm
  choice), XLA autotunes its convolutions at compile time; JAX preallocates 75% of the GPU (the reported
  peak counts live buffers only).
"""
from __future__ import annotations

import sys
import time

from benchmarks import run

ARGS = ("--device", "gpu", "--precision", "float32,bfloat16", "--model", "all",
        "--frameworks", "jaxnets,flax,torch_cl", "--tasks", "train,infer", "--batch-size", "128",
        "--repeats", "1", "--warmup", "5", "--min-steps", "10", "--min-time", "0.5", "--max-steps", "500",
        "--timeout", "240", "--tag", "quick")


def main(argv=None) -> int:
    """`benchmarks.run.main(ARGS + argv)`; options given in `argv` override those of `ARGS`."""
    start = time.perf_counter()
    code = run.main([*ARGS, *(sys.argv[1:] if argv is None else argv)])
    print(f"\ngpu_quick: {time.perf_counter() - start:.0f} s wall", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
