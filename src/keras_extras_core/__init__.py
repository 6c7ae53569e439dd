"""The parts of keras_extras that need no Keras.

`import keras_extras` imports Keras, and must: it registers every public class with
Keras, so that a `.keras` file loads after it. What needs neither Keras nor a backend
lives here instead, where importing it costs only its own imports:

* `files`: the one atomic file write;
* `history`: the tables that `keras_extras.LossHistory` records, and the recovery of
  each batch's own values;
* `figure`: the training figure that `keras_extras.TrainingPlotter` draws;
* `plot_process`: the process that draws it, shared by every plotter.

The drawing process (`python -m keras_extras_core.plot_process`), the command line
and the benchmarks' report use these modules without importing Keras. Nothing here is
public API: use it through `keras_extras`.
"""
