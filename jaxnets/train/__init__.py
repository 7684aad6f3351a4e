"""Training: Optax optimizers and schedules with PyTorch parity, jit-compiled steps, data parallelism, fit."""
# optim.py / schedules.py
from jaxnets.train import schedules
from jaxnets.train.optim import (OPTIMIZERS, ScaleByTorchAmsgradState, no_bias_no_norm, optimizer, path_names,
                                 scale_by_torch_amsgrad)
# state.py / steps.py / parallel.py / distributed.py
# fit.py / checkpoint.py
