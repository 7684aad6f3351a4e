"""`summary`: what each layer of a model costs (parameters, state, FLOPs, training memory), without running it.

Accounting (the usual per-layer cost table, e.g. for AlexNet):
- FLOPs: a multiply-add is 2 FLOPs. A layer with a `kernel` and `features` (`Conv`, `Dense`) does
  `kernel.size / features` multiply-adds per output element (`K_h * K_w * C_in / groups` for a conv,
  `in_features` for a dense layer): FLOPs = 2 * that * output elements (whole batch). Bias additions,
  normalisation, activations, pooling and other elementwise work count 0, as in the notes ("the pooling
  layer's computational cost is extremely low, so we can ignore it") and in the published multiply-add
  counts (ResNet-50: 4.09 GMACs per 224x224 image).
- Activation memory at training time: each layer's output and the gradient of the loss with respect to it,
  `2 * itemsize * elements` (float32: 8 bytes per element), for the whole batch. A `Flatten` output is a view
  of its input (0 bytes). The input images are not counted.
- Parameter memory at training time: 4 copies of each parameter (value, gradient, and Adam's two moments;
  the notes' "3-4 times the number of parameters"); non-trainable state (BatchNorm running statistics) once.
- Memory is reported in MiB (2^20 bytes), which is what the notes call "MB" (e.g. 283.6 MB for AlexNet's conv1).

Rows are the innermost modules (those that call no other module): `Conv`, `Dense`, `BatchNorm`, `ReLU`,
pools, ...; containers (models, blocks, `Sequential`) get no row of their own. Everything runs inside
`jax.eval_shape`: no FLOP is spent and no parameter is allocated.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.checks import is_int
from jaxnets.nn.reshape import Flatten
from jaxnets.nn.sequential import accepts_train

# Value, gradient and the two Adam moments: the training-time copies of each parameter.
PARAM_COPIES = 4
MIB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One module call.

    Attributes:
      name: the module's path, "/"-joined (e.g. "layer1_0/conv1"); "(model)" for the model itself.
      kind: the module's class name.
      output_shape: shape of the output, batch axis included.
      params: trainable parameters of the module (counted at its first call only, if it is reused).
      state: non-trainable variables (e.g. "batch_stats" running mean and variance).
      flops: forward FLOPs for the whole batch (2 per multiply-add).
      activations: output elements per example.
      activation_bytes: training-time memory of the output and its gradient for the whole batch.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    state: int
    flops: int
    activations: int
    activation_bytes: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """Per-layer costs and totals; `str(summary)` renders the table.

    Attributes:
      rows: one `LayerCost` per innermost module call, in execution order.
      input_shape: the shape of one example; batch_size: the batch the FLOPs and memory are for.
      params, state: totals over the whole model (including any variable created outside a row's module).
      flops: forward FLOPs for the batch; activation_bytes: training memory of all activations.
      param_bytes: `PARAM_COPIES` (4) x parameter bytes; state_bytes: state bytes (one copy).
      training_bytes: estimate of training memory, `param_bytes + state_bytes + activation_bytes` (a lower
        bound: workspace, the input batch and framework overhead are not included).
    """

    rows: tuple[LayerCost, ...]
    input_shape: tuple[int, ...]
    batch_size: int
    params: int
    state: int
    flops: int
    activation_bytes: int
    param_bytes: int
    state_bytes: int
    training_bytes: int

    @property
    def flops_per_example(self) -> float:
        return self.flops / self.batch_size

    @property
    def macs_per_example(self) -> float:
        """Multiply-adds per example (FLOPs / 2), the unit of most published counts."""
        return self.flops / 2 / self.batch_size

    def __str__(self) -> str:
        header = ("layer", "type", "output shape", "params", "state", "MFLOPs", "act. MiB")
        body = [(r.name, r.kind, str(r.output_shape), f"{r.params:,}", f"{r.state:,}", f"{r.flops / 1e6:,.1f}",
                 f"{r.activation_bytes / MIB:.1f}") for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        right = (False, False, False, True, True, True, True)

        def line(cells):
            return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right))

        rule = "-" * len(line(header))
        out = [line(header), rule, *map(line, body), rule]
        out += [f"input: {self.batch_size} x {self.input_shape}",
                f"parameters: {self.params:,} trainable, {self.state:,} non-trainable",
                f"forward: {self.flops / 1e9:,.3f} GFLOPs for the batch "
                f"({self.macs_per_example / 1e6:,.2f} MMACs per example)",
                f"training memory: activations {self.activation_bytes / MIB:,.1f} MiB + parameters "
                f"x{PARAM_COPIES} {self.param_bytes / MIB:,.1f} MiB + state {self.state_bytes / MIB:,.1f} MiB "
                f"= {self.training_bytes / MIB:,.1f} MiB"]
        return "\n".join(out)


def _subtree(tree: Mapping, path: Sequence[str]):
    for name in path:
        if not isinstance(tree, Mapping) or name not in tree:
            return None
        tree = tree[name]
    return tree


def _size(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _bytes(tree) -> int:
    return sum(math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


def summary(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1,
            print_table: bool = False) -> Summary:
    """Per-layer cost table of `model` on a batch of `batch_size` float32 inputs of shape `input_shape`.

    Args:
      model: an unbound Flax module; called as `model(x, train=False)` if its `__call__` takes `train`,
        else `model(x)`.
      input_shape: shape of ONE example, without the batch axis, e.g. `(224, 224, 3)` (NHWC models).
      batch_size: the batch the FLOPs and memory figures are for (shapes and per-example counts do not
        depend on it).
      print_table: also print the table.
    Returns: a `Summary` (see the module docstring for the accounting conventions).
    Raises: TypeError for an `input_shape` that is not a sequence of ints or a non-int `batch_size` (a bool
      included); ValueError for a size or a `batch_size` < 1.

    PyTorch: what `torchinfo.summary` / `ptflops` report, with the notes' memory conventions.
    """
    fn = "summary"
    if not is_int(batch_size):
        raise TypeError(f"{fn}: batch_size must be a positive int, got {type(batch_size).__name__} {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be a positive int, got {batch_size!r}.")
    expected = "a sequence of positive ints (one example, no batch axis)"
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str) or not all(map(is_int, input_shape)):
        raise TypeError(f"{fn}: input_shape must be {expected}, got {type(input_shape).__name__} {input_shape!r}.")
    if not all(d > 0 for d in input_shape):
        raise ValueError(f"{fn}: input_shape must be {expected}, got {input_shape!r}.")
    input_shape = tuple(int(d) for d in input_shape)
    calls: list[tuple[tuple[str, ...], nn.Module, tuple[jax.ShapeDtypeStruct, ...]]] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            outs = tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in jax.tree.leaves(out))
            calls.append((tuple(context.module.path), context.module, outs))
        return out

    kwargs = {"train": False} if accepts_train(model) else {}
    x = jax.ShapeDtypeStruct((batch_size, *input_shape), jnp.float32)
    key = jax.random.key(0)

    def init(x):
        with nn.intercept_methods(record):
            return model.init({"params": key, "dropout": key}, x, **kwargs)

    variables = jax.eval_shape(init, x)
    params = variables.get("params", {})
    state = {k: v for k, v in variables.items() if k != "params"}

    paths = [p for p, _, _ in calls]
    seen: set[tuple[str, ...]] = set()
    rows = []
    for path, module, outs in calls:
        if any(len(q) > len(path) and q[:len(path)] == path for q in paths):
            continue  # a container: its children have rows
        first = path not in seen
        seen.add(path)
        own = _subtree(params, path) if first else None
        n_params = _size(own) if own is not None else 0
        n_state = sum(_size(_subtree(tree, path)) for tree in state.values()) if first else 0
        elements = sum(math.prod(o.shape) for o in outs)
        flops = 0
        features = getattr(module, "features", None)
        kernel = own.get("kernel") if isinstance(own, Mapping) else None
        if kernel is None and not first:
            shared = _subtree(params, path)
            kernel = shared.get("kernel") if isinstance(shared, Mapping) else None
        if kernel is not None and isinstance(features, int) and features > 0:
            flops = 2 * elements * (math.prod(kernel.shape) // features)  # 2 x (multiply-adds per output)
        act_bytes = 0 if isinstance(module, Flatten) else sum(
            2 * math.prod(o.shape) * jnp.dtype(o.dtype).itemsize for o in outs)  # value + gradient
        rows.append(LayerCost(name="/".join(path) or "(model)", kind=type(module).__name__,
                              output_shape=outs[0].shape if len(outs) == 1 else tuple(o.shape for o in outs),
                              params=n_params, state=n_state, flops=flops,
                              activations=elements // batch_size, activation_bytes=act_bytes))

    activation_bytes = sum(r.activation_bytes for r in rows)
    param_bytes = PARAM_COPIES * _bytes(params)
    state_bytes = _bytes(state)
    result = Summary(rows=tuple(rows), input_shape=input_shape, batch_size=batch_size, params=_size(params),
                     state=_size(state), flops=sum(r.flops for r in rows), activation_bytes=activation_bytes,
                     param_bytes=param_bytes, state_bytes=state_bytes,
                     training_bytes=param_bytes + state_bytes + activation_bytes)
    if print_table:
        print(result)
    return result
