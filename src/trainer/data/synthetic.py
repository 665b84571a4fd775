"""Generated sets: known regression functions and the 2-D classification sets of the TensorFlow Playground."""

from __future__ import annotations

import numpy as np

from trainer.data.build import Arrays


def regression(n_samples: int = 5000, noise: float = 0.1, seed: int = 0) -> Arrays:
    """y = x0^2 + 2*x1 - 0.5*x2 + noise * N(0, 1), with x ~ N(0, 1)^3."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, 3))
    y = x[:, 0] ** 2 + 2 * x[:, 1] - 0.5 * x[:, 2] + noise * rng.standard_normal(n_samples)
    return Arrays(x=x, y=y)


def sine(train_at: list[float], val_at: list[float], test_at: list[float]) -> Arrays:
    """y = 1 + sin(pi/4 * x) at the given points, one split each: the function the backpropagation example of
    Hagan et al., Neural Network Design (ch. 11), approximates, no noise."""
    def at(points: list[float]) -> Arrays:
        x = np.asarray(points, dtype=np.float64)[:, None]
        return Arrays(x=x, y=1 + np.sin(np.pi / 4 * x[:, 0]))
    return Arrays(**vars(at(train_at)) | {"val": at(val_at), "test": at(test_at)})


def moons(n_samples: int = 1000, noise: float = 0.2, seed: int = 0) -> Arrays:
    """Two interleaving half circles."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return Arrays(x=x, y=y)


def circles(n_samples: int = 1000, noise: float = 0.1, seed: int = 0) -> Arrays:
    """A small circle inside a large one (radius ratio 0.5)."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n_samples, noise=noise, factor=0.5, random_state=seed)
    return Arrays(x=x, y=y)


def spiral(n_samples: int = 1000, noise: float = 0.1, seed: int = 0) -> Arrays:
    """Two arms of a spiral, each turning 1.75 times around the origin; noise is relative to the radius 5."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % 2
    t = rng.uniform(0, 1, n_samples)
    angle = 1.75 * 2 * np.pi * t + np.pi * y
    radius = 5 * t
    x = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    return Arrays(x=x + 5 * noise * rng.standard_normal(x.shape), y=y)


def xor(n_samples: int = 1000, noise: float = 0.1, seed: int = 0) -> Arrays:
    """Points in [-5, 5]^2 labelled by the sign of x0 * x1, kept a small margin away from the axes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, (n_samples, 2))
    x += np.sign(x) * 0.3
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return Arrays(x=x + 5 * noise * rng.standard_normal(x.shape), y=y)
