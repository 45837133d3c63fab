"""The marked-sum task, generated from the run's seed.

Each example is a sequence of ``length`` steps with two input channels: a value
``u_t ~ U(0, 1)`` and a marker ``m_t`` that is 1 at exactly two steps, one in each half.
The target is the sum ``s = u_i + u_j`` of the two marked values, binned into
``n_classes`` classes of equal probability: ``s`` has the triangular density on [0, 2],
CDF ``F(s) = s^2 / 2`` for ``s <= 1`` and ``1 - (2 - s)^2 / 2`` above, and the class is
``floor(n_classes * F(s))``. A network must remember the first marked value across the
sequence, which is what makes the task a test of recurrent memory.
"""

import numpy as np


def marked_sum(cfg, seed, *, length=16, n=4000, n_test=1000, n_classes=4):
    """sgdlab's loader signature: ``(DataConfig, seed, **options)`` -> the four arrays."""
    rng = np.random.default_rng([seed, 20260901])

    def split(count):
        values = rng.random((count, length))
        first = rng.integers(0, length // 2, count)
        second = rng.integers(length // 2, length, count)
        markers = np.zeros((count, length))
        rows = np.arange(count)
        markers[rows, first] = markers[rows, second] = 1.0
        s = values[rows, first] + values[rows, second]
        cdf = np.where(s <= 1, s**2 / 2, 1 - (2 - s) ** 2 / 2)
        labels = np.minimum((n_classes * cdf).astype(np.int64), n_classes - 1)
        return np.stack([values, markers], axis=-1).astype(np.float32), labels

    x_train, y_train = split(n)
    x_test, y_test = split(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "n_classes": n_classes}
