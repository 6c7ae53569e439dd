"""`python -m keras_extras_cli`: the `keras-extras` command."""

import sys

from keras_extras_cli import main

sys.exit(main())
