import numpy as np
import pytest

from trainer.data.synthetic import regression, sine


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


def test_sine_is_the_textbook_function_at_the_points_given_one_split_each():
    arrays = sine(train_at=[1.0], val_at=[-2.0, 0.0], test_at=[2.0])
    np.testing.assert_allclose(arrays.x, [[1.0]])
    np.testing.assert_allclose(arrays.y, [1.7071068], rtol=1e-7)  # the book's t = 1 + sin(pi/4)
    np.testing.assert_allclose(arrays.val.y, [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(arrays.test.y, [2.0])
