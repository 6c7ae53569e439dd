"""Benchmarks of keras_extras components against the Keras built-ins they replace.

`python -m benchmarks.run` measures, `python -m benchmarks.report` turns the JSON
into the tables and chart in `benchmarks/results/`; see docs/benchmarks.rst.
"""
