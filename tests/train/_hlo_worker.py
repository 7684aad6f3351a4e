"""Print the compiled HLO of a width-16 TinyResNet training step: `python _hlo_worker.py auto|none`.

Run by tests/train/test_parallel.py in two processes, with and without the XLA_FLAGS setting that
`CPU_COMPILER_OPTIONS` reproduces per program. Instruction ids (".123") are stripped: they are numbered
per process.
"""
import re
import sys

import numpy as np

import _tiny
from jaxnets.train.parallel import compile_steps
from jaxnets.train.state import TrainState

options = {"auto": "auto", "none": None}[sys.argv[1]]
steps = compile_steps("none", compiler_options=options)
state = TrainState.create(_tiny.TinyResNet(width=16), _tiny.optimizer(), np.zeros((1,) + _tiny.SHAPE, np.uint8), 0)
batch = steps.put_batch(_tiny.data(1, 16)[0])
text = steps.lower_train(steps.put_state(state), batch).compile().as_text()
print(re.sub(r"\.\d+\b", "", text))
