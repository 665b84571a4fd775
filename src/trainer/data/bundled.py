"""Real data sets that ship with scikit-learn, so the default run needs no download."""

from __future__ import annotations

from trainer.data.build import Arrays


def digits() -> Arrays:
    """1,797 8x8 grey images of handwritten digits (pixel values 0..16), 10 classes; x shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Arrays(x=bunch.images[:, None, :, :], y=bunch.target)


def breast_cancer() -> Arrays:
    """569 tumours, 30 measurements each; malignant (0) or benign (1): the logistic-regression case."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return Arrays(x=bunch.data, y=bunch.target)


def diabetes() -> Arrays:
    """442 patients, 10 baseline variables; target: disease progression one year later."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return Arrays(x=bunch.data, y=bunch.target)
