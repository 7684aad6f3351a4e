"""`python -m jaxnets.train`: the command line of `jaxnets.train.cli` (see its docstring and `--help`)."""
from jaxnets.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
