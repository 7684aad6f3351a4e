"""Compiled training and evaluation steps on one device or many, with one numerics.

`compile_steps(mode)` returns a `CompiledSteps` whose `.train(state, batch)` and `.eval(state, batch)`
are the pure steps of `jaxnets.train.steps`, compiled for one of four data-parallel modes:

- "none": `jax.jit` on one device.
- "sharded" (the modern path, and the default whenever more than one device is visible): `jax.jit` over
  a 1-D `Mesh` with axis "batch"; the batch is sharded along its first axis
  (`NamedSharding(mesh, P("batch"))`), the state is replicated. The program is written for the GLOBAL
  batch and XLA partitions it, so BatchNorm statistics are over the global batch with no `axis_name`
  in the model (create it with `axis_name=None`), and dropout draws the single-device keys. Works
  across processes (`jaxnets.train.distributed`).
- "shard_map": explicit per-device code, `jax.shard_map` over the same mesh with the step's
  `axis_name="batch"`: the loss is divided by the global count, gradients and metrics are
  `psum`-ed, and BatchNorm statistics are synchronised through the layer's `axis_name`: the model
  MUST be created with `axis_name="batch"` (`steps.axis_name`); the step raises ValueError otherwise.
- "pmap": the same per-device step under `jax.pmap(axis_name="batch")`, for code written against that
  API; the state carries a leading device axis (`put_state` adds it, `get_state` removes it). In
  current JAX `pmap` is itself built on `shard_map`; prefer "sharded" (or "shard_map" when you need
  per-device code) for new work. Single process only.

All modes compute the same step as one device on the same global batch: the same parameters and
BatchNorm statistics up to float32 reduction order (the parallel test checks 1e-5 after 5 steps).
Global batches that do not divide evenly over the devices are padded by `put_batch` with
`mask=False` rows, which the steps leave out of the loss, gradient, metrics and BatchNorm statistics
(exact in every mode: `layers.batch_norm` divides `psum(sum)` by `psum(count)`).

Typical use (the fit loop's):

    steps = compile_steps()                                   # "sharded" if > 1 device, else "none"
    model = models.create("resnet18", variant="cifar", axis_name=steps.axis_name)
    state = steps.put_state(TrainState.create(model, tx, batch["image"][:1], seed))
    for batch in data:
        state, metrics = steps.train(state, steps.put_batch(batch))   # the old state is donated
    params = steps.get_state(state).params
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from jaxnets.compile import CPU_COMPILER_OPTIONS, default_compiler_options, options_accepted  # noqa: F401 (re-exported)
from jaxnets.layers.losses import cross_entropy
from jaxnets.train.state import TrainState
from jaxnets.train.steps import make_eval_step, make_train_step

MODES = ("none", "sharded", "shard_map", "pmap")
AXIS_NAME = "batch"

class CompiledSteps:
    """Training and evaluation steps compiled for one data-parallel mode (see the module docstring).

    Attributes:
      mode: "none", "sharded", "shard_map" or "pmap".
      devices: the devices used, in mesh order (all processes' devices for "sharded"/"shard_map").
      num_devices: `len(devices)`.
      mesh: the 1-D `Mesh` over `devices` with axis "batch" (None for "none").
      axis_name: the axis the MODEL's BatchNorm layers must name: "batch" for "shard_map" and "pmap",
        None for "none" and "sharded". Pass it to `models.create(..., axis_name=steps.axis_name)`.
      state_sharding: where `put_state` puts every state leaf (replicated); for "pmap" the sharding of
        the leading device axis.
      batch_sharding: where `put_batch` puts every batch array (first axis split over the devices);
        for "pmap" the sharding of the leading device axis of the reshaped `[D, N / D, ...]` arrays.
      compiler_options: the XLA options both programs were compiled with (None: XLA's defaults).

    Methods:
      train(state, batch) -> (state, metrics): one training step; `state` is donated (its buffers are
        reused for the result: do not use the old state afterwards) when compiled with `donate=True`.
      eval(state, batch) -> metrics: one evaluation step.
      put_state(state) -> state placed for this mode; get_state(state) -> one copy (removes pmap's axis).
      put_batch(batch, *, global_batch_size=None) -> batch placed (and padded) for this mode.
      num_compiled() -> {"train": n, "eval": n}, programs compiled so far; lower_train(state, batch).
    Metrics are device scalars (global sums, no host transfer): `float(metrics["loss"])` fetches one.
    """

    def __init__(self, mode: str, devices: Sequence, train: Callable, eval: Callable, *, mesh: Mesh | None,
                 axis_name, state_sharding, batch_sharding, compiler_options: dict | None = None):
        self.mode, self.devices, self.mesh, self.axis_name = mode, tuple(devices), mesh, axis_name
        self.compiler_options = compiler_options
        self.num_devices = len(self.devices)
        self.state_sharding, self.batch_sharding = state_sharding, batch_sharding
        self._train, self._eval = train, eval
        self._local = [d for d in self.devices if d.process_index == jax.process_index()]

    def __repr__(self) -> str:
        return f"CompiledSteps(mode={self.mode!r}, num_devices={self.num_devices}, axis_name={self.axis_name!r})"

    def train(self, state: TrainState, batch: Mapping) -> tuple[TrainState, dict]:
        """One compiled training step on a batch from `put_batch`; returns `(new_state, metrics)`."""
        return self._train(state, batch)

    def eval(self, state: TrainState, batch: Mapping) -> dict:
        """One compiled evaluation step on a batch from `put_batch`; returns the metric sums."""
        # Evaluation reads apply_fn, params and batch_stats only. The optimizer (a static field, part of the
        # program's identity) and its state are dropped, so one compiled program serves every optimizer:
        # an optimizer or learning-rate sweep compiles the evaluation step once per model.
        return self._eval(state.replace(tx=None, opt_state=None, loss_scale=None), batch)

    def num_compiled(self) -> dict[str, int]:
        """How many programs each step has compiled so far, `{"train": int, "eval": int}` (one per distinct
        set of argument shapes, dtypes and static fields, e.g. one per model and optimizer object)."""
        return {"train": self._train._cache_size(), "eval": self._eval._cache_size()}

    def lower_train(self, state: TrainState, batch: Mapping):
        """The training step lowered for `state` and `batch` (placed by `put_state`/`put_batch`), not yet
        compiled: `.compile()` compiles it (to time compilation alone), `.compile().as_text()` is its HLO."""
        return self._train.lower(state, batch)

    def put_state(self, state: TrainState) -> TrainState:
        """Place `state` for this mode: on the device ("none"), replicated over the mesh ("sharded",
        "shard_map"; every process passes the same state), or stacked along a leading device axis ("pmap").
        Always a copy, so `state` itself stays usable after `train` donates the placed one."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: _put_host(x, self.state_sharding, stack=self.num_devices), state)
        if jax.process_count() > 1:  # a global sharding takes host values (checked equal across processes)
            return jax.tree.map(lambda x: _put_host(x, self.state_sharding), state)
        return jax.device_put(state, self.state_sharding, may_alias=False)  # a copy: `train` may donate it

    def get_state(self, state: TrainState) -> TrainState:
        """The single copy of a state placed by `put_state` (for "pmap", device 0's; the copies are equal)."""
        return jax.tree.map(lambda x: x[0], state) if self.mode == "pmap" else state

    def put_batch(self, batch: Mapping, *, global_batch_size: int | None = None) -> dict:
        """Pad and place one batch (this process's rows of it under `jaxnets.train.distributed`).

        Rows are padded (zeros, `mask` False) up to a multiple of the number of this process's devices,
        so every device gets the same number of rows; an existing "mask" is kept and extended.

        With `global_batch_size` (the nominal global batch size, e.g. `Batches.batch_size`) every batch
        is padded to the same `ceil(global_batch_size / process_count)` rows, rounded up to a multiple
        of this process's devices, and always carries a "mask": the shapes and the pytree are the same
        for every batch, short last batch included (nothing recompiles), and in every process (as a
        multi-process run requires, where each process passes its rows, `distributed.process_slice`).
        Without it, this process's own row count is padded to the device multiple, and a "mask" is
        added only when rows were padded.

        Args:
          batch: dict of arrays with the same first dimension N ("image", "label", optional "mask", ...).
          global_batch_size: nominal rows of the global batch (all processes together), or None.
        Returns: the placed batch; for "pmap" every array is reshaped to `[D, rows / D, ...]`.
        Raises: TypeError if `batch` is not a dict; ValueError for arrays with different first dimensions
          or a `global_batch_size` smaller than this process's rows.
        """
        fn = "put_batch"
        if not isinstance(batch, Mapping):
            raise TypeError(f"{fn}: batch must be a dict of arrays, got {type(batch).__name__}.")
        sizes = {k: (np.shape(v)[0] if np.ndim(v) else None) for k, v in batch.items()}
        if not sizes or len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"{fn}: every array of the batch must have the same first dimension N, got first "
                             f"dimensions {sizes}.")
        n = next(iter(sizes.values()))
        processes = jax.process_count() if self.mode in ("sharded", "shard_map") else 1
        total = n * processes if global_batch_size is None else int(global_batch_size)
        per_process = -(-total // processes)
        if per_process < n:
            raise ValueError(f"{fn}: this process holds {n} rows, more than its share ceil({total} / {processes}) "
                             f"= {per_process} of global_batch_size.")
        local = len(self._local)
        rows = -(-max(per_process, 1) // local) * local
        batch = dict(batch)
        # With global_batch_size: always a mask (the same pytree and shapes in every process and for every
        # batch, short or not); without it: a mask only where rows are padded.
        if global_batch_size is not None or rows != n:
            mask = batch.get("mask")
            batch["mask"] = np.ones(n, bool) if mask is None else mask
            batch = {k: _pad_rows(v, rows) for k, v in batch.items()}
        if self.mode == "pmap":
            return {k: jax.device_put(np.reshape(v, (self.num_devices, rows // self.num_devices) + np.shape(v)[1:]),
                                      self.batch_sharding) for k, v in batch.items()}
        if processes > 1:
            return {k: jax.make_array_from_process_local_data(self.batch_sharding, v,
                                                              (rows * processes,) + np.shape(v)[1:])
                    for k, v in batch.items()}
        return jax.device_put(batch, self.batch_sharding)


def _put_host(x, sharding, *, stack: int | None = None):
    """Place `x` through a host copy, optionally stacked `stack` times along a new leading axis.

    Used where `device_put` of a device array does not apply: pmap's stacked state (built on the host,
    so no per-shape compile) and a global sharding spanning several processes (which takes host values).
    """
    if jnp.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_put_host(jax.random.key_data(x), sharding, stack=stack),
                                        impl=jax.random.key_impl(x))
    host = np.asarray(x if not isinstance(x, jax.Array) or x.is_fully_addressable else x.addressable_data(0))
    if stack is not None:
        host = np.broadcast_to(host[None], (stack,) + host.shape)
    return jax.device_put(host, sharding)


def _pad_rows(x, rows: int):
    """`x` with zero rows appended up to `rows` (numpy stays numpy, so no device round trip)."""
    xp = np if isinstance(x, np.ndarray | np.generic) else jnp
    x = xp.asarray(x)
    return xp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def compile_steps(mode: str = "auto", *, loss_fn: Callable = cross_entropy, preprocess: Callable | None = None,
                  augment: Callable | None = None, devices: Sequence | None = None,
                  donate: bool = True, precision=None, compiler_options="auto") -> CompiledSteps:
    """Compile `make_train_step`/`make_eval_step` for a data-parallel mode.

    Args:
      mode: "auto" ("sharded" if more than one device is visible, else "none"), "none", "sharded",
        "shard_map" or "pmap" (see the module docstring).
      loss_fn, preprocess, augment: passed to `make_train_step` (and `loss_fn`, `preprocess` to
        `make_eval_step`).
      devices: the devices to use, in order; default all devices (`jax.devices()`, every process's,
        ordered by process) and for "none" the first. "pmap" needs this process's devices only.
      donate: donate the state's buffers to `train` (`donate_argnums=0`), so the update happens in
        place instead of holding two copies of parameters and optimizer state.
      precision: None (float32), a dtype name or a `precision.Policy`, passed to both steps; create the
        state with the same `TrainState.create(..., precision=...)`. A float16 loss-scale decision is
        taken on the global gradients, so it is the same on every device in every mode.
      compiler_options: XLA options for both programs (`jax.jit(..., compiler_options=...)`): "auto"
        (`default_compiler_options(devices)`: on CPU, XLA's own convolutions instead of YNNPACK's, much
        faster for convolutional nets, see benchmarks/README.md; nothing elsewhere), None (XLA's defaults) or a dict of
        `DebugOptions` fields to values. "pmap" cannot take options: "auto" means None there.
    Returns: a `CompiledSteps`.
    Raises:
      ValueError: unknown mode; "none" with several devices or processes; "pmap" with several
        processes or with other processes' devices, or with a non-empty `compiler_options` dict; an
        empty `devices`.
      TypeError: `compiler_options` neither "auto", None nor a dict.
    """
    fn = "compile_steps"
    if mode not in ("auto",) + MODES:
        raise ValueError(f"{fn}: mode must be one of {('auto',) + MODES}, got {mode!r}.")
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        if mode == "none" or (mode == "auto" and len(devices) == 1):
            devices = devices[:1]
    devices = list(devices)
    if not devices:
        raise ValueError(f"{fn}: devices must be a non-empty sequence of devices, got {devices!r}.")
    if mode == "auto":
        mode = "sharded" if len(devices) > 1 else "none"
    if isinstance(compiler_options, str) and compiler_options == "auto":
        compiler_options = None if mode == "pmap" else default_compiler_options(devices)
    elif compiler_options is not None and not isinstance(compiler_options, Mapping):
        raise TypeError(f"{fn}: compiler_options must be 'auto', None or a dict of XLA options, "
                        f"got {type(compiler_options).__name__}.")
    compiler_options = dict(compiler_options) if compiler_options else None
    if mode == "pmap" and compiler_options:
        raise ValueError(f"{fn}: mode 'pmap' cannot take compiler_options (jax.pmap has no such argument), "
                         f"got {compiler_options}; use mode='shard_map', or compiler_options=None.")
    if mode == "none" and (len(devices) > 1 or jax.process_count() > 1):
        raise ValueError(f"{fn}: mode 'none' runs on one device of one process, got {len(devices)} devices and "
                         f"{jax.process_count()} processes; use mode='sharded' (or pass devices=[one device]).")
    if mode == "pmap" and (jax.process_count() > 1 or any(d.process_index != jax.process_index() for d in devices)):
        raise ValueError(f"{fn}: mode 'pmap' is supported on this process's devices only ({jax.process_count()} "
                         f"processes); use mode='sharded' or 'shard_map' across processes.")
    donate_argnums = (0,) if donate else ()
    options = dict(loss_fn=loss_fn, preprocess=preprocess, precision=precision)
    jit = functools.partial(jax.jit, compiler_options=compiler_options)
    P = PartitionSpec

    if mode == "none":
        sharding = SingleDeviceSharding(devices[0])
        train = jit(make_train_step(augment=augment, **options),
                        donate_argnums=donate_argnums)
        evaluate = jit(make_eval_step(**options))
        return CompiledSteps(mode, devices, train, evaluate, mesh=None, axis_name=None,
                             state_sharding=sharding, batch_sharding=sharding,
                             compiler_options=compiler_options)

    mesh = Mesh(np.asarray(devices, dtype=object), (AXIS_NAME,))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS_NAME))
    if mode == "sharded":
        # One program for the global batch; XLA partitions it (BN statistics, loss mean: global reductions).
        train = jit(make_train_step(augment=augment, **options),
                        in_shardings=(replicated, split), out_shardings=(replicated, replicated),
                        donate_argnums=donate_argnums)
        evaluate = jit(make_eval_step(**options),
                           in_shardings=(replicated, split), out_shardings=replicated)
        return CompiledSteps(mode, devices, train, evaluate, mesh=mesh, axis_name=None,
                             state_sharding=replicated, batch_sharding=split,
                             compiler_options=compiler_options)

    train_step = make_train_step(augment=augment, axis_name=AXIS_NAME, **options)
    eval_step = make_eval_step(axis_name=AXIS_NAME, **options)
    if mode == "shard_map":
        # check_vma=False: psum is its own transpose (pmap's semantics), which the per-device step's
        # gradient (explicit psum of per-device gradients, BN psums inside) is written for.
        per_device = dict(mesh=mesh, in_specs=(P(), P(AXIS_NAME)), check_vma=False)
        train = jit(jax.shard_map(train_step, out_specs=(P(), P()), **per_device),
                        in_shardings=(replicated, split), out_shardings=(replicated, replicated),
                        donate_argnums=donate_argnums)
        evaluate = jit(jax.shard_map(eval_step, out_specs=P(), **per_device),
                           in_shardings=(replicated, split), out_shardings=replicated)
        return CompiledSteps(mode, devices, train, evaluate, mesh=mesh, axis_name=AXIS_NAME,
                             state_sharding=replicated, batch_sharding=split,
                             compiler_options=compiler_options)

    # pmap: state and batch carry a leading device axis; metrics are psum-ed, so out_axes=None returns one copy.
    train = jax.pmap(train_step, axis_name=AXIS_NAME, devices=devices, out_axes=(0, None),
                     donate_argnums=donate_argnums)
    evaluate = jax.pmap(eval_step, axis_name=AXIS_NAME, devices=devices, out_axes=None)
    return CompiledSteps(mode, devices, train, evaluate, mesh=mesh, axis_name=AXIS_NAME,
                         state_sharding=split, batch_sharding=split)
