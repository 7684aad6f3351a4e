"""Populations: many seeds and hyperparameter settings trained as one compiled program (`fit(seeds=, hparams=)`).

    from jaxnets import data, models, train
    train_set, val_set = data.split(data.mnist_sample(), 0.1, seed=0)
    state, history = train.fit(
        models.create("lenet5"), train_set, val_data=val_set, epochs=5, batch_size=128,
        seeds=[0, 1, 2], hparams={"learning_rate": [0.01, 0.1], "weight_decay": [0.0, 5e-4]},
        optimizer=lambda hp: train.optimizer("sgd", learning_rate=hp["learning_rate"], momentum=0.9,
                                             weight_decay=hp["weight_decay"]))
    history.runs[r]                          # {"seed": 1, "learning_rate": 0.01, "weight_decay": 0.0}, r = 1
    history.val_error[-1][r]                 # member r's validation error after the last epoch
    member = train.unstack(state, r)         # an ordinary TrainState: evaluate, Checkpoints, ...

Members: the cartesian product of the grid points (outer, `itertools.product` over `hparams` in the
dict's key order) and the seeds (inner): member `r = g * len(seeds) + i` has seed `seeds[i]` and grid
point `g` (`population_members`). Each member has its own initialisation and state key (from its seed,
as `TrainState.create`), batch order (`Batches(train_data, batch_size, seed=seed)`: members that share a
seed share their batches), dropout/augmentation keys (`fold_in(rng, step)`), hyperparameters, optimizer
state and BatchNorm statistics: member r computes what `fit(seed=seeds[i], ...)` with its
hyperparameters computes, up to float32 reduction order (a vmapped convolution may sum in another order).

Hyperparameters: `label_smoothing` goes to the loss (`loss_fn(..., label_smoothing=hp)`), `dropout_rate`
to the model's `dropout` attribute (`model.clone(dropout=hp)`, every registry model with dropout); every
other name is read by `optimizer(hp)`, a function called inside the compiled step with the member's
hyperparameters as traced float32 scalars (`jaxnets.train.optimizer` takes traced values). A traced
hyperparameter that happens to be 0 keeps its transform (e.g. `momentum=0.0` keeps a momentum trace of
decay 0, `weight_decay=0.0` adds `0 * p`): the same numbers as leaving it out.

Checked before anything is compiled: the seeds (a list of distinct non-negative ints, not with `seed=`),
the grid (non-empty lists of distinct finite numbers), `label_smoothing` only with a loss that takes it,
`dropout_rate` only for a model with a `dropout` attribute whose code accepts a traced rate, optimizer
hyperparameters only with an optimizer FUNCTION, which is called once with the first member's values
(an unknown keyword or a hyperparameter it reads but the grid lacks is reported), and every optimizer
hyperparameter must matter: two grid points that differ only in it must give different updates or
optimizer states over two updates of the initial parameters with a fixed pseudo-gradient (a function
that ignores a swept value is an error, not `len(values)` identical members). The estimated memory
(`population_memory` x members per device, against `available_memory`) must fit.

The engine: the stacked `TrainState` (every array leaf with a leading run axis R, its `tx` a
`PopulationOptimizer` that knows each member's optimizer) goes through
`jit(vmap(train_step))` with the member hyperparameters `[R]`, the batch `[R, B, ...]` (or `[B, ...]`
shared when every member has the same seed), and two run-axis arrays kept on the device: `active` (the
members still training) and the step at which each member diverged. A member whose loss (or whose
parameters after the update) is not finite is frozen at its last finite state by `jnp.where` inside the
compiled step (no host round trip per step) and recorded in `History.diverged`; a member that early
stopping ends is frozen the same way; training ends when no member is active. Devices: the run axis
is split over a `Mesh` with axes ("runs", "batch") of sizes `gcd(R, D)` and `D / gcd(R, D)`, so with
R >= D each device trains whole members and with fewer members each member's batch is split over the
"batch" axis (data parallel inside the member, XLA-partitioned as `compile_steps("sharded")`).

PyTorch: no equivalent training loop; `torch.func.stack_module_state` + `torch.func.vmap` cover
inference and hand-written steps, otherwise a Python loop over runs.
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnets.checks import check_choice, check_int, is_real
from jaxnets.cost import summary as cost_summary
from jaxnets.data.batches import Batches
from jaxnets.data.validation import check_dataset
from jaxnets.nn.sequential import accepts_keyword
from jaxnets.train.checkpoint import Checkpoints
from jaxnets.train.distributed import is_main_process
from jaxnets.train.evaluation import as_batches, check_model_data, sources_as_batches, with_mask
from jaxnets.train.fit import check_fit_arguments, check_not_channels_first, check_same_run, sample_input
from jaxnets.train.history import BestMetric, History, NonFiniteLossError, learning_rate_of, write_logs
from jaxnets.train.parallel import default_compiler_options
from jaxnets.train.precision import all_finite, as_policy
from jaxnets.train.progress import ProgressBar, progress_enabled
from jaxnets.train.state import TrainState
from jaxnets.train.steps import make_eval_step, make_train_step, model_takes_mask

__all__ = ["fit_population", "population_members", "population_state", "unstack", "PopulationOptimizer", "POPULATION_MODES",
           "AUTO_MODE", "resolve_population_mode",
           "LOSS_HPARAMS", "MODEL_HPARAMS", "available_memory", "population_memory"]

POPULATION_MODES = ("auto", "vmap", "sequential")
# What population="auto" runs, per device platform (any other platform: "vmap"). On CPU the members train
# faster one after another than as one vmapped program, even with conv's per-member batching rules
# (benchmarks/README.md, "Populations"): XLA CPU runs the memory-bound layers (ReLU, pooling) of R members'
# activations in one program about 2x slower per member. GPUs and TPUs run the vmapped (grouped)
# convolutions natively, so there one program over the members is expected to win.
AUTO_MODE = {"cpu": "sequential"}


def resolve_population_mode(population: str, devices=None) -> str:
    """"vmap" or "sequential": `population` itself, or for "auto" the mode `AUTO_MODE` gives the platform of
    `devices` (default `jax.devices()`; "vmap" unless every device maps to another mode)."""
    check_choice("fit", "population", population, POPULATION_MODES)
    if population != "auto":
        return population
    platforms = {d.platform for d in (jax.devices() if devices is None else devices)}
    modes = {AUTO_MODE.get(platform, "vmap") for platform in platforms}
    return modes.pop() if len(modes) == 1 else "vmap"
LOSS_HPARAMS = ("label_smoothing",)  # passed to loss_fn as keywords
MODEL_HPARAMS = {"dropout_rate": "dropout"}  # hyperparameter -> the model attribute it sets
_REFRESH_SECONDS = 0.5  # how often the loop fetches finished steps' metrics (progress bar)
_BEST_DIR = "best_members"  # under checkpoint_dir: each member's best state, with early stopping


# ----------------------------------------------------------------------------------------------
# members
# ----------------------------------------------------------------------------------------------
def _check_seeds(fn: str, seeds) -> list[int]:
    if not isinstance(seeds, (list, tuple)):
        raise TypeError(f"{fn}: seeds must be a list of distinct non-negative ints, got {type(seeds).__name__} "
                        f"{seeds!r}.")
    if not seeds:
        raise ValueError(f"{fn}: seeds must be a non-empty list of distinct non-negative ints, got {seeds!r}.")
    for s in seeds:
        check_int(fn, "every seed in seeds", s, minimum=0)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{fn}: seeds must be distinct (each member's seed sets its initialisation and batch "
                         f"order), got {list(seeds)}.")
    return [int(s) for s in seeds]


def _check_hparams(fn: str, hparams) -> dict[str, list[float]]:
    if not isinstance(hparams, Mapping):
        raise TypeError(f"{fn}: hparams must be a dict of hyperparameter name -> list of values, got "
                        f"{type(hparams).__name__}.")
    out = {}
    for name, values in hparams.items():
        if not isinstance(name, str):
            raise TypeError(f"{fn}: hparams keys must be hyperparameter names (str), got {type(name).__name__} "
                            f"{name!r}.")
        if name == "seed":
            raise ValueError(f"{fn}: hparams may not use the name 'seed' (a member's seed comes from seeds=); pass "
                             f"seeds=[...] instead.")
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"{fn}: hparams[{name!r}] must be a list of numbers, got {type(values).__name__} "
                            f"{values!r}.")
        if not values:
            raise ValueError(f"{fn}: hparams[{name!r}] is an empty list; give at least one value.")
        bad = [v for v in values if not is_real(v)]
        if bad:
            raise TypeError(f"{fn}: hparams[{name!r}] must hold real numbers (not bools or strings), got "
                            f"{bad[0]!r} in {list(values)}.")
        if not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f"{fn}: hparams[{name!r}] must hold finite numbers, got {list(values)}.")
        if len({float(v) for v in values}) != len(values):
            raise ValueError(f"{fn}: hparams[{name!r}] holds a value twice, {list(values)}; each grid point "
                             f"must be distinct.")
        out[name] = [float(v) for v in values]
    return out


def population_members(seeds: Sequence[int] | None = None, hparams: Mapping[str, Sequence[float]] | None = None
                       ) -> list[dict]:
    """The members of a population in `fit`'s order: grid points outer, seeds inner.

    Args:
      seeds: distinct non-negative ints; None means `[0]`.
      hparams: hyperparameter name -> non-empty list of distinct finite numbers; None means one grid point `{}`.
    Returns: `[{"seed": s, **hp}, ...]`, member `r = g * len(seeds) + i` with seed `seeds[i]` and the grid
      point `g` of `itertools.product(*hparams.values())` (values as Python floats).
    Raises: TypeError/ValueError for malformed seeds or hparams (see `fit`).
    """
    fn = "population_members"
    seeds = [0] if seeds is None else _check_seeds(fn, seeds)
    grid = {} if hparams is None else _check_hparams(fn, hparams)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return [{"seed": s, **point} for point in points for s in seeds]


# ----------------------------------------------------------------------------------------------
# the stacked state's optimizer, unstack
# ----------------------------------------------------------------------------------------------
def _as_hp(hp: Mapping[str, float]) -> dict:
    """Hyperparameters as float32 scalar arrays: the form the compiled step traces them in, so an optimizer
    built from them has the population's state structure (a 0 keeps its transform)."""
    return {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}


class PopulationOptimizer:
    """The `tx` of a stacked population state: each member's optimizer, and the vmapped whole.

    Attributes:
      optimizer: `fit`'s `optimizer=`: a GradientTransformation (shared) or a function `hp -> GradientTransformation`.
      members: the members as `population_members` lists them (`{"seed": s, **hp}`).
      model: the model (its `dropout` is set per member for a `dropout_rate` hyperparameter).
    `member(r)` is member r's GradientTransformation (built from its hyperparameters as float32
    scalars); `init(params)`/`update(grads, state, params)` act on stacked trees (leading axis R).
    Hashed by identity (a static field of the state).
    """

    def __init__(self, optimizer, members: Sequence[dict], model: nn.Module):
        self.optimizer, self.members, self.model = optimizer, [dict(m) for m in members], model
        self.names = [k for k in self.members[0] if k != "seed"]
        self.values = {k: np.asarray([m[k] for m in self.members], np.float32) for k in self.names}

    def __repr__(self) -> str:
        return f"PopulationOptimizer(R={len(self.members)}, hparams={self.names})"

    def of(self, hp: Mapping) -> optax.GradientTransformation:
        """The optimizer for hyperparameters `hp` (traced or float32 arrays)."""
        return self.optimizer if _is_transformation(self.optimizer) else self.optimizer(dict(hp))

    def member(self, r: int) -> optax.GradientTransformation:
        return self.of(_as_hp({k: self.members[r][k] for k in self.names}))

    def hparams(self) -> dict[str, jax.Array]:
        """The members' hyperparameters, `{name: float32 [R]}`."""
        return {k: jnp.asarray(v) for k, v in self.values.items()}

    def init(self, params):
        return jax.vmap(lambda p, hp: self.of(hp).init(p))(params, self.hparams())

    def update(self, grads, state, params=None):
        return jax.vmap(lambda g, s, p, hp: self.of(hp).update(g, s, p))(grads, state, params, self.hparams())


def _is_transformation(optimizer) -> bool:
    return callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))


def _member_model(model: nn.Module, hp: Mapping) -> nn.Module:
    return model.clone(**{attr: hp[name] for name, attr in MODEL_HPARAMS.items() if name in hp})


def unstack(state: TrainState, r: int) -> TrainState:
    """Member `r` of a population state (`fit(seeds=..., hparams=...)`) as an ordinary `TrainState`.

    Args:
      state: the stacked state `fit` returns for a population (array leaves `[R, ...]`).
      r: the member, `0 <= r < R` (see `population_members` for the order).
    Returns: a `TrainState` with member r's arrays (no run axis), `apply_fn` of the model with member r's
      `dropout_rate` (if swept), and `tx` = the optimizer built from member r's hyperparameters (as float32
      scalars, so its state matches the saved `opt_state`). `evaluate`, `Checkpoints` and
      `TrainState.apply_gradients` accept it.
    Raises: TypeError for a state that is not a population's or a non-int `r`; ValueError for `r` out of range.
    PyTorch: `{k: v[r] for k, v in torch.func.stack_module_state(models)[0].items()}`.
    """
    fn = "unstack"
    if not isinstance(state, TrainState) or not isinstance(state.tx, PopulationOptimizer):
        raise TypeError(f"{fn}: state must be the stacked TrainState of a population (fit with seeds= or "
                        f"hparams=), got {type(state).__name__} with tx {type(getattr(state, 'tx', None)).__name__}.")
    tx = state.tx
    r = check_int(fn, "r", r, minimum=0)
    if r >= len(tx.members):
        raise ValueError(f"{fn}: r must be in [0, {len(tx.members)}) (the population's members), got {r}.")
    arrays = jax.tree.map(lambda x: x[r], {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
                                           "opt_state": state.opt_state, "rng": state.rng,
                                           "loss_scale": state.loss_scale})
    model = _member_model(tx.model, {k: tx.members[r][k] for k in tx.names})
    return TrainState(**arrays, apply_fn=model.apply, tx=tx.member(r), input_shape=state.input_shape)


# ----------------------------------------------------------------------------------------------
# checks before compiling
# ----------------------------------------------------------------------------------------------
def _check_optimizer(fn: str, optimizer, members: list[dict], names: list[str]) -> optax.GradientTransformation:
    """Validate `optimizer` against the grid; returns the first member's optimizer (concrete float32 values)."""
    opt_names = [n for n in names if n not in LOSS_HPARAMS and n not in MODEL_HPARAMS]
    if _is_transformation(optimizer):
        if opt_names:
            raise ValueError(f"{fn}: hparams {opt_names} are optimizer hyperparameters, but optimizer is a "
                             f"fixed GradientTransformation; pass a function of the member's hyperparameters, "
                             f"e.g. optimizer=lambda hp: train.optimizer('sgd', learning_rate=hp['learning_rate']).")
        return optimizer
    if not callable(optimizer):
        raise TypeError(f"{fn}: optimizer must be an optax.GradientTransformation or a function hp -> "
                        f"GradientTransformation, got {type(optimizer).__name__}.")
    hp0 = _as_hp({k: members[0][k] for k in names})
    try:
        tx0 = optimizer(dict(hp0))
    except KeyError as error:
        raise ValueError(f"{fn}: optimizer(hp) reads the hyperparameter {error.args[0]!r}, which hparams does not "
                         f"give (hparams: {names}); add it to hparams or give it a fixed value.") from error
    except (TypeError, ValueError) as error:
        raise type(error)(f"{fn}: optimizer(hp) failed for the first member's hyperparameters "
                          f"{ {k: members[0][k] for k in names} }: {error}") from error
    if not _is_transformation(tx0):
        raise TypeError(f"{fn}: optimizer(hp) must return an optax.GradientTransformation, got "
                        f"{type(tx0).__name__}.")
    return tx0


def _check_optimizer_uses(fn: str, optimizer, members: list[dict], names: list[str], params) -> None:
    """ValueError for an optimizer hyperparameter that `optimizer(hp)` ignores.

    The rule: for each optimizer hyperparameter with two or more values, the first member's
    hyperparameters and the same with only that one changed must give different updates or optimizer
    states over two updates of `params` with a fixed pseudo-gradient (two, so that momentum counts)."""
    grads = jax.tree.map(lambda p: 0.01 + 0.5 * p, params)

    def run(hp: dict):
        tx = optimizer(_as_hp(hp))
        state = tx.init(params)
        u1, state = tx.update(grads, state, params)
        u2, state = tx.update(grads, state, params)
        return jax.tree.leaves((u1, u2, state))

    base = {k: members[0][k] for k in names}
    reference = None
    for name in names:
        if name in LOSS_HPARAMS or name in MODEL_HPARAMS:
            continue
        other = next((m[name] for m in members if m[name] != base[name]), None)
        if other is None:
            continue
        reference = run(base) if reference is None else reference
        changed = run({**base, name: other})
        if all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(reference, changed)):
            raise ValueError(f"{fn}: the hyperparameter {name!r} does not change what optimizer(hp) computes "
                             f"({name}={base[name]} and {name}={other} give identical updates); the optimizer "
                             f"function ignores it. Pass it on, e.g. {name}=hp[{name!r}], or remove it from "
                             f"hparams.")


def _check_targets(fn: str, names: list[str], model: nn.Module, loss_fn: Callable, sample: np.ndarray) -> None:
    """`label_smoothing` needs a loss that takes it; `dropout_rate` a model with a `dropout` attribute that
    accepts a traced rate."""
    if "label_smoothing" in names and not accepts_keyword(loss_fn, "label_smoothing"):
        raise ValueError(f"{fn}: hparams has 'label_smoothing' but loss_fn {getattr(loss_fn, '__name__', loss_fn)!r} "
                         f"takes no label_smoothing keyword; use jaxnets.layers.cross_entropy (the default).")
    for name, attr in MODEL_HPARAMS.items():
        if name not in names:
            continue
        if attr not in getattr(type(model), "__dataclass_fields__", {}):
            raise ValueError(f"{fn}: hparams has {name!r} but the model {type(model).__name__} has no {attr!r} "
                             f"attribute to set (the registry models with dropout have one).")
        x = jax.ShapeDtypeStruct((1,) + tuple(sample.shape[1:]), jnp.float32)
        key = jax.random.key(0)
        try:
            jax.eval_shape(lambda rate, x: model.clone(**{attr: rate}).init({"params": key, "dropout": key}, x,
                                                                            train=True),
                           jax.ShapeDtypeStruct((), jnp.float32), x)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError) as error:
            raise ValueError(f"{fn}: the model {type(model).__name__} cannot take a traced {attr} (one value per "
                             f"member): its code branches on the value ({type(error).__name__}); sweep "
                             f"{name!r} with population='sequential' is not possible either. Make the model "
                             f"compute the same for a rate of 0 without `if self.{attr} > 0`.") from error


def available_memory(device) -> int:
    """Bytes of memory a population may use on `device`: `device.memory_stats()["bytes_limit"]` where the
    backend reports it (GPU, TPU), else the host's physical memory (CPU)."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory statistics raise (or return None)
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def population_memory(model: nn.Module, input_shape: Sequence[int], batch_size: int) -> int:
    """Estimated training bytes of ONE member: `jaxnets.summary`'s `training_bytes` (parameters x4, state,
    activations and their gradients for the batch; a lower bound) plus the float32 input batch."""
    cost = cost_summary(model, tuple(input_shape), batch_size=batch_size)
    return int(cost.training_bytes + 4 * batch_size * math.prod(input_shape))


def _check_memory(fn: str, model: nn.Module, sample: np.ndarray, batch_size: int, members_per_device: int,
                  runs_axis: int, device) -> None:
    try:
        member = population_memory(model, sample.shape[1:], batch_size)
    except Exception:  # a model `summary` cannot trace (no estimate): nothing to check
        return
    limit = available_memory(device)
    if members_per_device * member > limit:
        fits = max(limit // member, 0) * runs_axis
        raise ValueError(f"{fn}: the population needs about {members_per_device * member / 2**30:.2f} GiB per "
                         f"device ({members_per_device} members x {member / 2**20:.1f} MiB, jaxnets.summary's "
                         f"estimate for batch {batch_size}), more than the {limit / 2**30:.2f} GiB available; the "
                         f"largest population that fits is R = {fits}. Use fewer seeds or grid points, a smaller "
                         f"batch, population='sequential', or more devices.")


# ----------------------------------------------------------------------------------------------
# the compiled steps
# ----------------------------------------------------------------------------------------------
def _select(mask: jax.Array, new: TrainState, old: TrainState) -> TrainState:
    """Per member, `new` where `mask` [R] is True, else `old` (params, batch_stats, opt_state, step; the
    key never changes)."""
    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return new.replace(**{name: jax.tree.map(pick, getattr(new, name), getattr(old, name))
                          for name in ("step", "params", "batch_stats", "opt_state")})


class _Steps:
    """The population's compiled steps for a run axis of `size` members on `mesh` ("runs", "batch")."""

    def __init__(self, model, tx: PopulationOptimizer, *, loss_fn, preprocess, augment, precision, mesh: Mesh,
                 shared_batch: bool, compiler_options):
        names = tx.names
        self.mesh = mesh
        P = PartitionSpec
        runs = NamedSharding(mesh, P("runs"))
        self.runs = runs
        self.batch_sharding = NamedSharding(mesh, P("batch") if shared_batch else P("runs", "batch"))
        self.val_sharding = NamedSharding(mesh, P("batch"))

        def parts(hp):
            smoothing = {n: hp[n] for n in LOSS_HPARAMS if n in names}
            loss = functools.partial(loss_fn, **smoothing) if smoothing else loss_fn
            return loss, _member_model(model, hp)

        def member_train(state, hp, batch):
            loss, member_model = parts(hp)
            step = make_train_step(loss, preprocess=preprocess, augment=augment, precision=precision)
            new, metrics = step(state.replace(tx=tx.of(hp), apply_fn=member_model.apply), batch)
            return new.replace(tx=state.tx, apply_fn=state.apply_fn), metrics

        def train(state, hp, batch, active, diverged_at):
            new, metrics = jax.vmap(member_train, in_axes=(0, 0, None if shared_batch else 0))(state, hp, batch)
            finite = jnp.isfinite(metrics["loss"]) & jax.vmap(all_finite)((new.params, new.batch_stats))
            keep = active & finite
            # 0-based global step of the first non-finite update of a member that was training.
            diverged_at = jnp.where(active & ~finite, state.step, diverged_at)
            metrics = jax.tree.map(lambda m: jnp.where(keep, m, jnp.zeros((), m.dtype)), metrics)
            return _select(keep, new, state), metrics, keep, diverged_at

        def member_eval(state, hp, batch):
            loss, member_model = parts(hp)
            return make_eval_step(loss, preprocess=preprocess, precision=precision)(
                state.replace(apply_fn=member_model.apply), batch)

        jit = functools.partial(jax.jit, compiler_options=compiler_options)
        self._train = jit(train, in_shardings=(runs, runs, self.batch_sharding, runs, runs),
                          out_shardings=(runs, runs, runs, runs), donate_argnums=(0, 3, 4))
        self._eval = jit(jax.vmap(member_eval, in_axes=(0, 0, None)),
                         in_shardings=(runs, runs, self.val_sharding), out_shardings=runs)

    def train(self, state, hp, batch, active, diverged_at):
        return self._train(state, hp, batch, active, diverged_at)

    def eval(self, state, hp, batch):
        return self._eval(state.replace(tx=None, opt_state=None), hp, batch)


def _padded(batch: Mapping, rows: int) -> dict:
    """`batch` (host arrays, first axis N) with a "mask" and zero rows appended up to `rows` (masked out)."""
    batch = with_mask(batch)
    n = len(batch["mask"])
    if rows == n:
        return batch
    return {k: np.pad(np.asarray(v), [(0, rows - n)] + [(0, 0)] * (np.ndim(v) - 1)) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------
# the engine
# ----------------------------------------------------------------------------------------------
class _Population:
    """The members' state and the loop's device arrays, run with the vmapped or the sequential executor."""

    def __init__(self, steps: _Steps, *, chunks: list[slice], hp: dict, shared_batch: bool, rows: int,
                 pad_to: int | None):
        self.steps, self.chunks, self.shared_batch, self.rows, self.pad_to = steps, chunks, shared_batch, rows, pad_to
        self.hp = [jax.device_put({k: v[c] for k, v in hp.items()}, steps.runs) for c in chunks]
        self.state: list[TrainState] = []
        self.active: list[jax.Array] = []
        self.diverged_at: list[jax.Array] = []

    def load(self, state: TrainState, active: np.ndarray, diverged_at: np.ndarray) -> None:
        """Place the stacked state and the loop arrays (split into the executor's chunks)."""
        runs = self.steps.runs
        self.state = [jax.device_put(jax.tree.map(lambda x: x[c], state), runs) for c in self.chunks]
        self.active = [jax.device_put(np.asarray(active[c], bool), runs) for c in self.chunks]
        self.diverged_at = [jax.device_put(np.asarray(diverged_at[c], np.int32), runs) for c in self.chunks]

    def stacked(self) -> TrainState:
        if len(self.state) == 1:
            return self.state[0]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs), *self.state)

    def host_flags(self) -> tuple[np.ndarray, np.ndarray]:
        active, diverged = jax.device_get((self.active, self.diverged_at))
        return np.concatenate(active), np.concatenate(diverged)

    def set_active(self, active: np.ndarray) -> None:
        self.active = [jax.device_put(np.asarray(active[c], bool), self.steps.runs) for c in self.chunks]

    def place_batch(self, per_member: list[dict]) -> list[dict]:
        """Host batches of the R members (shared: one) -> the executor's placed batches."""
        ready = [b if self.pad_to is None and "mask" not in b and len(b["label"]) == self.rows
                 else _padded(b, self.rows) for b in per_member]
        if self.shared_batch:
            return [jax.device_put(ready[0], self.steps.batch_sharding)] * len(self.chunks)
        return [jax.device_put({k: np.stack([b[k] for b in ready[c]]) for k in ready[0]}, self.steps.batch_sharding)
                for c in self.chunks]

    def train(self, batches: list[dict]) -> dict:
        metrics = []
        for i, batch in enumerate(batches):
            self.state[i], m, self.active[i], self.diverged_at[i] = self.steps.train(
                self.state[i], self.hp[i], batch, self.active[i], self.diverged_at[i])
            metrics.append(m)
        return metrics

    def eval(self, batch: dict) -> list[dict]:
        placed = jax.device_put(batch, self.steps.val_sharding)
        return [self.steps.eval(s, hp, placed) for s, hp in zip(self.state, self.hp)]


def _cat(chunks: list[dict]) -> dict[str, np.ndarray]:
    """Per-chunk metric dicts (host) -> one dict of [R] arrays."""
    return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}


def _mesh(fn: str, parallel: str, devices, size: int) -> Mesh:
    """The ("runs", "batch") mesh for a run axis of `size` members."""
    check_choice(fn, "parallel (for a population)", parallel, ("auto", "none", "sharded"))
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: d.id)
        if parallel == "none":
            devices = devices[:1]
    devices = list(devices)
    if not devices:
        raise ValueError(f"{fn}: devices must be a non-empty sequence of devices, got {devices!r}.")
    if parallel == "none" and len(devices) > 1:
        raise ValueError(f"{fn}: parallel='none' runs on one device, got {len(devices)} devices.")
    runs = math.gcd(size, len(devices))
    return Mesh(np.asarray(devices, dtype=object).reshape(runs, len(devices) // runs), ("runs", "batch"))


def _member_batches(fn: str, train_data, batch_size, seeds: list[int], drop_last: bool) -> dict[int, Batches]:
    """One `Batches` per distinct seed (a given `Batches` is re-created with each seed and its options)."""
    if not isinstance(train_data, Mapping) and type(train_data) is not Batches:  # a source, a Loader, ...
        raise TypeError(f"{fn}: a population takes train_data as a dict {{'image': [N, H, W, C], 'label': [N]}} or a "
                        f"jaxnets.data.Batches, got {type(train_data).__name__}; the population's batches are drawn "
                        f"per seed from arrays in memory.")
    if isinstance(train_data, Batches):
        if train_data.sharding is not None:
            raise ValueError(f"{fn}: a population places its batches itself; pass train_data as a dict or a "
                             f"Batches without sharding.")
        if batch_size is not None and batch_size != train_data.batch_size:
            raise ValueError(f"{fn}: batch_size={batch_size} differs from the batch_size {train_data.batch_size} "
                             f"of the Batches passed as train_data; pass batch_size=None (or the same value).")
        return {s: Batches(train_data.arrays, train_data.batch_size, shuffle=train_data.shuffle, seed=s,
                           drop_last=train_data.drop_last, pad_last=train_data.pad_last,
                           prefetch=train_data.prefetch) for s in seeds}
    return {s: as_batches(fn, "train_data", train_data, batch_size, train=True, seed=s, drop_last=drop_last)
            for s in seeds}


def _stack(states: list[TrainState]):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def population_state(tx: PopulationOptimizer, created: Mapping[int, TrainState]) -> TrainState:
    """The stacked state of a population before its first step: member r starts from its seed's
    initialisation and gets the optimizer state of its hyperparameters.

    Args:
      tx: the population's optimizer (its `members` give each member's seed and hyperparameters).
      created: seed -> `TrainState.create(model, optax.identity(), sample, seed, ...)` for every seed of
        `tx.members` (the optimizer there is unused: only the arrays are taken).
    Returns: a `TrainState` whose array leaves carry the leading run axis R, `tx` = `tx`, step 0. It is also
      the structure `Checkpoints.restore` needs to read a population's checkpoint (`load_run`).
    """
    seeds = [m["seed"] for m in tx.members]
    params = _stack([created[s].params for s in seeds])
    return TrainState(step=jnp.zeros((len(seeds),), jnp.int32), params=params,
                      batch_stats=_stack([created[s].batch_stats for s in seeds]),
                      opt_state=jax.jit(tx.init)(params), rng=_stack([created[s].rng for s in seeds]),
                      apply_fn=tx.model.apply, tx=tx, input_shape=created[seeds[0]].input_shape)


def fit_population(model: nn.Module, train_data, *, seeds, hparams, population: str, val_data, epochs: int,
                   batch_size, optimizer, seed, loss_fn: Callable, augment, preprocess, learning_rate,
                   early_stopping, checkpoint_dir, keep: int, resume: bool, progress: bool, parallel: str, devices,
                   log_dir, on_epoch_end, precision, compiler_options, initial_variables, drop_last: bool,
                   plateau, checkpoint_every=None) -> tuple[TrainState, History]:
    """`fit` for a population (called by `fit` when `seeds` or `hparams` is given; arguments as `fit`'s).

    Returns: `(state, history)`: the stacked state (array leaves `[R, ...]`; with early stopping each
      member's state at its best epoch, else its last; a diverged member's last finite state) and a
      `History` with `runs`, `diverged`, and one value per member in every per-epoch metric.
    Raises: NonFiniteLossError when every member has diverged (with the `history` of the completed
      epochs); TypeError/ValueError for bad arguments, all before anything is compiled.
    """
    fn = "fit"
    population = resolve_population_mode(population, devices)
    if seeds is not None and seed is not None:
        raise ValueError(f"{fn}: pass seed= for one run or seeds= for a population, not both (got seed={seed!r} "
                         f"and seeds={seeds!r}).")
    seeds = [0 if seed is None else seed] if seeds is None else _check_seeds(fn, seeds)
    grid = {} if hparams is None else _check_hparams(fn, hparams)
    members = population_members(seeds, grid)
    names = list(grid)
    size = len(members)
    member_seeds = [m["seed"] for m in members]
    if plateau is not None:
        raise ValueError(f"{fn}: plateau= is not supported for a population (one learning-rate schedule per "
                         f"member); sweep the learning rate instead, or train the runs one by one.")
    if checkpoint_every is not None:
        raise ValueError(f"{fn}: checkpoint_every= (mid-epoch checkpoints) is not supported for a population; "
                         f"a population is checkpointed after every epoch (checkpoint_dir=).")
    if jax.process_count() > 1:
        raise ValueError(f"{fn}: a population runs in one process; got {jax.process_count()} processes.")
    policy = None if precision is None else as_policy(fn, precision)
    if policy is not None and policy.needs_loss_scale:
        raise ValueError(f"{fn}: precision {str(policy)!r} (float16 with loss scaling) is not supported for a "
                         f"population; use 'bfloat16' or float32.")
    tx0 = _check_optimizer(fn, optimizer, members, names)
    check_fit_arguments(fn, epochs=epochs, optimizer=tx0, seed=seeds[0], early_stopping=early_stopping,
                        val_data=val_data, resume=resume, checkpoint_dir=checkpoint_dir)
    distinct = list(dict.fromkeys(seeds))
    train_batches = _member_batches(fn, train_data, batch_size, distinct, drop_last)
    first = train_batches[distinct[0]]
    check_dataset(fn, "train_data", train_data)
    val_data = sources_as_batches(fn, "val_data", val_data, first.batch_size, train=False, seed=seeds[0])
    if val_data is not None:
        check_dataset(fn, "val_data", val_data)
    val_batches = None if val_data is None else as_batches(fn, "val_data", val_data, first.batch_size, train=False,
                                                           seed=seeds[0])
    epochs = int(epochs)
    monitor = early_stopping.monitor if early_stopping else ("val_loss" if val_batches else "train_loss")
    log_dir = os.fspath(log_dir) if log_dir is not None else (
        os.fspath(checkpoint_dir) if checkpoint_dir is not None else None)
    main = is_main_process()
    show = progress_enabled(progress) and main
    sample = sample_input(train_data, first)
    check_not_channels_first(fn, model, sample.shape)
    _check_targets(fn, names, model, loss_fn, sample)

    # Each distinct seed's initialisation, as `TrainState.create` (the optimizer state comes below, per member).
    created = {s: TrainState.create(model, optax.identity(), sample, s, precision=policy, variables=initial_variables)
               for s in distinct}
    one = created[distinct[0]]
    check_model_data(fn, one, "train_data", train_data, preprocess=preprocess)
    if val_data is not None:
        check_model_data(fn, one, "val_data", val_data, preprocess=preprocess)
    if not _is_transformation(optimizer):
        _check_optimizer_uses(fn, optimizer, members, names, one.params)
    pad_to = first.batch_size if (model_takes_mask(one.apply_fn) or not one.batch_stats) else None

    shared_batch = len(distinct) == 1
    chunk = size if population == "vmap" else 1
    mesh = _mesh(fn, parallel, devices, chunk)
    runs_axis, batch_axis = mesh.devices.shape
    rows = -(-first.batch_size // batch_axis) * batch_axis
    if rows != first.batch_size and pad_to is None:
        pad_to = first.batch_size  # padded rows need the mask (the step refuses them without one)
    _check_memory(fn, model, sample, rows // batch_axis, -(-chunk // runs_axis), runs_axis,
                  mesh.devices.flat[0])
    tx = PopulationOptimizer(optimizer, members, model)
    if compiler_options == "auto":
        compiler_options = default_compiler_options(list(mesh.devices.flat))
    steps = _Steps(model, tx, loss_fn=loss_fn, preprocess=preprocess, augment=augment, precision=policy, mesh=mesh,
                   shared_batch=shared_batch, compiler_options=compiler_options)
    fresh = population_state(tx, created)
    engine = _Population(steps, chunks=[slice(i, i + chunk) for i in range(0, size, chunk)], hp=tx.values,
                         shared_batch=shared_batch, rows=rows, pad_to=pad_to)

    # What a checkpoint must agree on for a resume to continue the same population.
    run = {"seeds": seeds, "hparams": grid, "batch_size": first.batch_size, "train_examples": first.num_examples,
           "monitor": monitor}
    if policy is not None and not policy.is_float32:
        run["precision"] = str(policy)
    bests = [BestMetric(early_stopping.min_delta if early_stopping else 0.0) for _ in members]
    history = History(runs=[{"seed": m["seed"], **{k: m[k] for k in names}} for m in members],
                      diverged=[None] * size, best_epoch=[None] * size, stopped_early=[False] * size)
    active, diverged_at = np.ones(size, bool), np.full(size, -1, np.int32)
    start, best_state = 0, None
    checkpoints = None if checkpoint_dir is None else Checkpoints(checkpoint_dir, keep=keep)
    best_checkpoints = (None if checkpoint_dir is None or early_stopping is None
                        else Checkpoints(os.path.join(os.fspath(checkpoint_dir), _BEST_DIR), keep=2))
    try:
        if checkpoints is not None and checkpoints.latest() is not None:
            if not resume:
                raise ValueError(f"{fn}: checkpoint_dir {checkpoints.directory!r} already holds checkpoints (epochs "
                                 f"{checkpoints.epochs()}); pass resume=True to continue that run, or use a new "
                                 f"directory.")
            fresh, meta, _ = checkpoints.restore_latest_intact(
                fresh, check_meta=lambda meta: check_same_run(fn, checkpoints.directory, meta["run"], run))
            history, start = History.from_dict(meta["history"]), int(meta["epoch"])
            for best, saved in zip(bests, meta["best"]):
                best.load(saved)
            active, diverged_at = np.asarray(meta["active"], bool), np.asarray(meta["diverged_at"], np.int32)
            if best_checkpoints is not None and start in best_checkpoints.epochs():
                best_state = best_checkpoints.restore(fresh, start)[0]
        engine.load(fresh, active, diverged_at)
        del fresh, created
        for epoch in range(start, epochs):
            if not active.any():
                break
            started = time.perf_counter()
            history, best_state, active = _epoch(
                fn, engine, epoch, epochs=epochs, train_batches=train_batches, seeds=member_seeds,
                val_batches=val_batches, history=history, bests=bests, best_state=best_state, show=show,
                monitor=monitor, learning_rate=learning_rate, early_stopping=early_stopping, started=started,
                checkpoints=checkpoints)
            state = engine.stacked()
            if checkpoints is not None:
                _, diverged_at = engine.host_flags()
                meta = {"epoch": epoch + 1, "history": history.to_dict(), "best": [b.to_dict() for b in bests],
                        "run": run, "active": active.tolist(), "diverged_at": diverged_at.tolist()}
                checkpoints.save(epoch + 1, state, best_rank=epoch + 1, meta=meta)
                if best_checkpoints is not None:
                    best_checkpoints.save(epoch + 1, best_state, best_rank=epoch + 1, meta={"epoch": epoch + 1})
            if main:
                write_logs(log_dir, history)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history)
    finally:
        for c in (checkpoints, best_checkpoints):
            if c is not None:
                c.close()
    state = engine.stacked()
    if early_stopping is not None and best_state is not None:
        use_best = jnp.asarray([b.epoch is not None for b in bests])
        state = _select(use_best, best_state, state)
    return state, history


def _epoch(fn: str, engine: _Population, epoch: int, *, epochs: int, train_batches: dict[int, Batches],
           seeds: list[int], val_batches, history: History, bests: list[BestMetric], best_state, show: bool,
           monitor: str, learning_rate, early_stopping, started: float, checkpoints):
    """Train, validate and record epoch `epoch` (0-based) of every member. Returns `(history, best_state,
    active)`; raises NonFiniteLossError when no member is left after a divergence."""
    size = len(seeds)
    active_before, _ = engine.host_flags()
    distinct = list(train_batches)
    first = train_batches[distinct[0]]
    bar = ProgressBar(len(first), epoch=epoch + 1, epochs=epochs, enabled=show)
    pending, host = [], []
    start = last = time.perf_counter()

    def fetch(upto: int) -> None:
        host.extend(_cat(m) for m in jax.device_get(pending[len(host):upto]))
        sums = {k: np.sum([m[k] for m in host], axis=0, dtype=np.float64) for k in ("loss", "correct", "count")}
        count = np.where(sums["count"] > 0, sums["count"], np.nan)  # a member with no finite step: nan, left out
        bar.update(len(host), loss=sums["loss"] / count, accuracy=sums["correct"] / count,
                   images_per_sec=float(sums["count"].sum()) / max(time.perf_counter() - start, 1e-9))

    summary = None
    try:
        iterators = {s: train_batches[s].epoch(epoch) for s in distinct}
        try:
            for i in range(len(first)):
                by_seed = {s: next(it) for s, it in iterators.items()}
                per_member = [by_seed[distinct[0]]] if len(distinct) == 1 else [by_seed[s] for s in seeds]
                pending.append(engine.train(engine.place_batch(per_member)))
                now = time.perf_counter()
                if i >= 1 and now - last >= _REFRESH_SECONDS:
                    last = now
                    fetch(i)
        finally:
            for it in iterators.values():
                it.close()
        fetch(len(pending))
        seconds = time.perf_counter() - start
        active, diverged_at = engine.host_flags()
        newly = active_before & ~active  # stopping happens after the epoch: these diverged in it
        diverged = list(history.diverged)
        for r in np.flatnonzero(newly):
            diverged[r] = {"step": int(diverged_at[r]), "epoch": epoch + 1}
        if all(d is not None for d in diverged):
            r = int(np.flatnonzero(newly)[-1])
            raise NonFiniteLossError(
                f"{fn}: every member of the population has diverged (a non-finite loss or parameters); the last, "
                f"member {r} ({history.runs[r]}), at step {diverged[r]['step']} (epoch {epoch + 1}). Lower the "
                f"learning rates or clip the gradients.",
                step=diverged[r]["step"], epoch=epoch + 1, batch=diverged[r]["step"] - epoch * len(first) + 1,
                checkpoint=None if checkpoints is None or checkpoints.latest() is None
                else checkpoints.path(checkpoints.latest()),
                history=copy.deepcopy(history))
        history.diverged = diverged
        sums = {k: np.sum([m[k] for m in host], axis=0, dtype=np.float64) for k in ("loss", "correct", "count")}
        count = np.maximum(sums["count"], 1)
        nan = np.where(active, 1.0, np.nan)  # stopped or diverged members: nan
        history.train_loss.append((sums["loss"] / count * nan).tolist())
        history.train_error.append(((1.0 - sums["correct"] / count) * nan).tolist())
        history.images_per_sec.append(float(sums["count"].sum()) / seconds)
        if val_batches is not None:
            chunks = [engine.eval(_padded(b, engine.rows)) for b in val_batches.epoch(0)]
            val = [_cat(c) for c in jax.device_get(chunks)]
            v = {k: np.sum([m[k] for m in val], axis=0, dtype=np.float64) for k in ("loss", "correct", "count")}
            history.val_loss.append((v["loss"] / v["count"] * nan).tolist())
            history.val_error.append(((1.0 - v["correct"] / v["count"]) * nan).tolist())
            summary = f"val_acc={100 * np.nanmean(1.0 - np.asarray(history.val_error[-1])):.2f}% (member mean)"
    finally:
        bar.close(summary)

    state = engine.stacked()
    rates = _learning_rates(learning_rate, state, active)
    if rates is not None:
        history.learning_rate.append(rates)
    history.wall_time.append((history.wall_time[-1] if history.wall_time else 0.0) + time.perf_counter() - started)
    values = getattr(history, monitor)[-1]
    improved = np.zeros(size, bool)
    stopped = list(history.stopped_early)
    for r in np.flatnonzero(active):
        improved[r] = bests[r].update(values[r], epoch + 1)
        if early_stopping is not None and bests[r].bad_epochs >= early_stopping.patience:
            stopped[r] = True
    history.best_epoch = [b.epoch for b in bests]
    history.stopped_early = stopped
    if early_stopping is not None:
        best_state = state if best_state is None else _select(jnp.asarray(improved), state, best_state)
        best_state = jax.tree.map(lambda x: x.copy(), best_state)  # the engine's buffers are donated next step
        active = active & ~np.asarray(stopped)
        engine.set_active(active)
    return history, best_state, active


def _learning_rates(learning_rate, state: TrainState, active: np.ndarray) -> list[float] | None:
    """Each member's learning rate of its last update (`learning_rate_of`), nan for inactive members; None
    when it cannot be known."""
    steps = np.asarray(jax.device_get(state.step))
    if learning_rate is None and learning_rate_of(None, jax.tree.map(lambda x: x[0], state.opt_state), 0) is None:
        return None
    rates = []
    for r in range(len(steps)):
        opt_state = None if learning_rate is not None else jax.tree.map(lambda x: x[r], state.opt_state)
        rate = learning_rate_of(learning_rate, opt_state, int(steps[r]) - 1)
        rates.append(float(rate) if active[r] and rate is not None else math.nan)
    return rates
