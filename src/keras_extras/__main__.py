"""`python -m keras_extras demo`: train a digits classifier with the package's metric."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Runs the command named on the command line.

    Args:
        argv: The arguments, without the program name; `sys.argv[1:]` by default.

    Returns:
        The process exit code.
    """
    args = sys.argv[1:] if argv is None else argv
    if args != ["demo"]:
        print("usage: python -m keras_extras demo", file=sys.stderr)
        return 2
    import keras
    import numpy as np

    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        print("the demo needs scikit-learn: pip install 'keras-extras[test]'", file=sys.stderr)
        return 2

    import keras_extras

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(shape=(64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", keras_extras.RMSE()],
    )
    model.fit(x_train, y_train, epochs=10, batch_size=32, validation_split=0.1, verbose=2)
    logs = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    probs = model.predict(x_test, verbose=0)
    reference = float(np.sqrt(np.mean((np.eye(10)[y_test] - probs) ** 2)))
    print(f"backend: {keras.backend.backend()}")
    for name, value in logs.items():
        print(f"test {name:>8}: {value:.4f}")
    print(f"NumPy RMSE on the same predictions: {reference:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
