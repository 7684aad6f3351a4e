"""`python -m jaxnets.train`: the command line of `jaxnets.train.cli` (see its docstring and `--help`)."""
from jaxnets.train.cli import main

raise SystemExit(main())
