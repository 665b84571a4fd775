import numpy as np
import pytest

from trainer.data.synthetic import regression


def test_synthetic_regression_follows_its_formula_exactly_without_noise():
    arrays = regression(n_samples=200, noise=0.0, seed=1)
    x = arrays.x
    assert x.shape == (200, 3)
    np.testing.assert_array_equal(arrays.y, x[:, 0] ** 2 + 2 * x[:, 1] - 0.5 * x[:, 2])


def test_synthetic_regression_noise_has_the_configured_scale():
    arrays = regression(n_samples=5000, noise=0.3, seed=2)
    x = arrays.x
    residual = arrays.y - (x[:, 0] ** 2 + 2 * x[:, 1] - 0.5 * x[:, 2])
    assert residual.std() == pytest.approx(0.3, rel=0.05)
    assert abs(residual.mean()) < 0.03
