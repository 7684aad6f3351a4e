"""Training: Optax optimizers and schedules with PyTorch parity, jit-compiled steps, data parallelism, fit."""
# optim.py / schedules.py / plateau.py
from jaxnets.train import schedules
from jaxnets.train.optim import (OPTIMIZERS, ScaleByTorchAmsgradState, adadelta, adagrad, adam, adamax, adamw, amsgrad,
                                 nadam, no_bias_no_norm, optimizer, path_names, radam, rmsprop, scale_by_torch_amsgrad,
                                 sgd)
from jaxnets.train.plateau import ReduceLROnPlateau, ScaleByPlateauState, scale_by_plateau
# state.py / steps.py / parallel.py / distributed.py
from jaxnets.train import distributed
from jaxnets.train.parallel import CPU_COMPILER_OPTIONS, MODES, CompiledSteps, compile_steps, default_compiler_options
from jaxnets.train.precision import DynamicLossScale, Policy
from jaxnets.train.state import TrainState
from jaxnets.train.steps import make_eval_step, make_train_step
# fit.py, history.py, evaluation.py, batch_stats.py, checkpoint.py
from jaxnets.train.batch_stats import recompute_batch_stats
from jaxnets.train.checkpoint import CheckpointError, Checkpoints
from jaxnets.train.evaluation import ensemble_predict, evaluate, tta_predict
from jaxnets.train.fit import fit
from jaxnets.train.history import EarlyStopping, History, NonFiniteLossError, plot_history
# population.py: fit(seeds=, hparams=) trains a population; its stacked state and members
from jaxnets.train.population import POPULATION_MODES, PopulationOptimizer, population_members, unstack
# runs.py
from jaxnets.train.runs import Run, load_run
