"""The loss landscape around and between solutions, on any torch model and loss.

Like :mod:`sgdlab.curvature` it knows nothing of sgdlab's training loop: functions take
``(model, loss_fn, data, ...)`` with ``loss_fn(model(x), y)`` the MEAN loss of a batch and
``data`` an ``(x, y)`` pair or an iterable of pairs; points are flat parameter vectors,
state dicts or modules of the model's architecture (:mod:`~sgdlab.landscape.layout`).
Results are small dataclasses that keep their values with the directions (or their seed
and recipe) and save to .npz. See docs/landscape.md for the maths.

Slices (Li et al. 2018, filter-normalized directions; Hessian eigenvectors; the last step)::

    s = slice_2d(model, loss_fn, (x, y), np.linspace(-1, 1, 31), directions="random", seed=0)
    s.loss, s.accuracy, s.directions.recipes; s.save("plane.npz")

Paths (Goodfellow et al. 2015; Garipov et al. 2018; Fort & Jastrzębski 2019)::

    line = interpolate(model, loss_fn, data, theta_a, theta_b); line.barrier
    curve = train_curve(model, loss_fn, data, theta_a, theta_b, kind="bezier")
    curve_values(model, loss_fn, data, curve).barrier
    hub = train_connector(model, loss_fn, data, [theta_a, theta_b, theta_c])

Random subspaces (Li et al. 2018, intrinsic dimension) and trajectories::

    run = train_subspace(model, loss_fn, data, d=200, projection="sparse")
    pca = trajectory_pca(history, Layout.of(model)); trajectory_plane(model, loss_fn, data, pca)
    colander_envelope(losses, lambda_max)
"""

from sgdlab.landscape.colanders import (
    ColanderEnvelope,
    ColanderPoints,
    colander_envelope,
    colander_points,
    sharpness_at,
)
from sgdlab.landscape.curves import (
    Connector,
    Curve,
    connector_values,
    curve_values,
    train_connector,
    train_curve,
)
from sgdlab.landscape.directions import (
    Directions,
    given_directions,
    hessian_directions,
    normalize,
    random_directions,
    step_direction,
)
from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.evaluate import PointEvaluator, evaluate_points
from sgdlab.landscape.layout import Layout, fixed_subset, model_at
from sgdlab.landscape.paths import PathValues, evaluate_path, interpolate, path_points
from sgdlab.landscape.slices import (
    Slice,
    grid_coordinates,
    loss_slice,
    points_along,
    slice_1d,
    slice_2d,
)
from sgdlab.landscape.subspace import (
    IntrinsicDimension,
    SubspaceRun,
    intrinsic_dimension,
    projection_matrix,
    subspace_sweep,
    train_subspace,
)
from sgdlab.landscape.trajectory import TrajectoryPCA, trajectory_pca, trajectory_plane

__all__ = [
    "ColanderEnvelope",
    "ColanderPoints",
    "Connector",
    "Curve",
    "Directions",
    "IntrinsicDimension",
    "LandscapeError",
    "Layout",
    "PathValues",
    "PointEvaluator",
    "Slice",
    "SubspaceRun",
    "TrajectoryPCA",
    "colander_envelope",
    "colander_points",
    "connector_values",
    "curve_values",
    "evaluate_path",
    "evaluate_points",
    "fixed_subset",
    "given_directions",
    "grid_coordinates",
    "hessian_directions",
    "interpolate",
    "intrinsic_dimension",
    "loss_slice",
    "model_at",
    "normalize",
    "path_points",
    "points_along",
    "projection_matrix",
    "random_directions",
    "sharpness_at",
    "slice_1d",
    "slice_2d",
    "step_direction",
    "subspace_sweep",
    "train_connector",
    "train_curve",
    "train_subspace",
    "trajectory_pca",
    "trajectory_plane",
]
