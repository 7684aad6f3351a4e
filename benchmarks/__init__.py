"""Speed and memory of jaxnets against raw Flax and PyTorch: `python -m benchmarks.run --help`.

`run.py` drives the measurements, one subprocess per measurement (`_worker.py`), alternating the
frameworks; `flax_baselines.py` and `torch_baselines.py` hold the same networks written without
jaxnets. Results land in `benchmarks/results/*.json`; `benchmarks/README.md` has the table.
"""
