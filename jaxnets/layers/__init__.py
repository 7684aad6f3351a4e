"""Pure layer functions: arrays in, arrays out, nothing hidden.

Conventions, stated once here for every function in this package:
- Channels-last is the default layout (`NWC`, `NHWC`, `NDHWC`; kernels `WIO`, `HWIO`, `DHWIO`). Every
  spatial function takes `layout="NCHW"` (or `"NCW"`/`"NCDHW"`) for PyTorch-shaped arrays, kernels then
  `OIHW` like PyTorch. The rank (1D/2D/3D) comes from the input. `layout` always names an ACTIVATION
  layout; where a kernel's layout is meant (`fold_batch_norm`, `jaxnets.init`) the keyword is
  `kernel_layout`.
- Argument order: a PRNG key, where needed, comes first (as in `jax.random`), then the arrays (input,
  params, state), then at most ONE positional option: the parameter that defines the operation, as in
  `torch.nn.functional` (dropout's `rate`, a pool's `window`, `adaptive_avg_pool`'s `output_size`,
  `maxout`'s `pieces`): `dropout(key, x, 0.5, train=True)`, `max_pool(y, 3, stride=2)`. Every other
  option is keyword-only (`stride=`, `padding=`, `layout=`, `negative_slope=`, `alpha=`, `eps=`, ...).
  `leaky_relu(x, 0.2)` and `elu(x, 0.5)` still work for one release, with a DeprecationWarning.
- State goes in and comes out explicitly: stateful layers return `(y, new_state)`.
- `train` is keyword-only with no default wherever behaviour differs between training and evaluation.
- Bad input raises TypeError (a wrong type: a non-array input, a float or a bool where an int is meant, a
  non-string layout) or ValueError (a wrong value or shape), naming the function, the argument, what was
  expected and what arrived (`jaxnets.checks`). Shapes are static, so these checks run once at trace time
  and cost nothing under `jit`.
"""
# conv.py
from jaxnets.layers.conv import conv, conv_output_size, linear
# pooling.py
from jaxnets.layers.pooling import adaptive_avg_pool, avg_pool, global_avg_pool, max_pool
# reshape.py
from jaxnets.layers.reshape import flatten
# normalization.py
from jaxnets.layers.normalization import (batch_norm, fold_batch_norm, group_norm, init_batch_norm,
                                          init_group_norm, init_instance_norm, init_layer_norm,
                                          instance_norm, layer_norm)
# dropout.py
from jaxnets.layers.dropout import dropout
# activations.py
from jaxnets.layers.activations import (elu, gelu, get_activation, identity, leaky_relu, log_softmax, maxout,
                                        relu, sigmoid, silu, softplus, tanh)
# losses.py
from jaxnets.layers.losses import (binary_cross_entropy_with_logits, cross_entropy, focal_loss, kl_div, l1_loss,
                                   margin_ranking_loss, mse_loss, nll_loss, smooth_l1_loss)
# metrics.py
from jaxnets.layers.metrics import accuracy
