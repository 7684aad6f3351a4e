"""Pure layer functions: arrays in, arrays out, nothing hidden.

Conventions, stated once here for every function in this package:
- Channels-last is the default layout (``NWC``, ``NHWC``, ``NDHWC``; kernels ``WIO``, ``HWIO``,
  ``DHWIO``). Every spatial function takes ``layout="NCHW"`` (or ``"NCW"``/``"NCDHW"``) for
  PyTorch-shaped arrays, kernels then ``OIHW`` like PyTorch. The rank (1D/2D/3D) comes from the input.
- Arrays first, options keyword-only; a PRNG key, where needed, comes first (as in ``jax.random``).
- State goes in and comes out explicitly: stateful layers return ``(y, new_state)``.
- ``train`` is keyword-only with no default wherever behaviour differs between training and evaluation.
- Bad input raises ``ValueError``/``TypeError`` naming the function, the argument, what was expected and
  what arrived. Shapes are static, so these checks run once at trace time and cost nothing under ``jit``.
"""
# conv.py
# pooling.py
# normalization.py
# dropout.py
# activations.py
# losses.py
# metrics.py
