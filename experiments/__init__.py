"""Experiments: one script per question, run as ``python -m experiments.<name> [--full | --tiny]``.

Results (``results.json`` + PNG plots) go to ``experiments/results/<name>/``; see ``experiments/README.md``.
Imports point one way: experiments use the library, the library never imports experiments.
"""
