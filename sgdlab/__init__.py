"""sgdlab: train networks with SGD, measure the geometry of the trajectory, reproduce
published results.

The names most studies need, importable from here (each loads its module on first use,
so ``import sgdlab`` stays light)::

    import sgdlab
    res = sgdlab.hessian_eigs(model, loss_fn, (x, y), k=5)      # curvature of any model
    run = sgdlab.train(sgdlab.load_config("run.toml"), sgdlab.Store("runs"))
    sgdlab.run_experiment("edge-of-stability", sgdlab.Store("runs"), scale="cpu")
"""

from __future__ import annotations

from importlib import import_module, metadata

try:
    __version__ = metadata.version("sgdlab")
except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

_NAMES = {
    "hessian_eigs": "sgdlab.curvature", "hessian_trace": "sgdlab.curvature",
    "hessian_density": "sgdlab.curvature", "covariance_eigs": "sgdlab.curvature",
    "covariance_trace": "sgdlab.curvature", "covariance_density": "sgdlab.curvature",
    "CurvatureOptions": "sgdlab.curvature",
    "RunConfig": "sgdlab.config", "load_config": "sgdlab.config",
    "resume": "sgdlab.train",
    "Store": "sgdlab.store",
    "run_sweep": "sgdlab.sweep", "load_grid": "sgdlab.sweep",
    "run_experiment": "sgdlab.experiments",
}
__all__ = ["__version__", "train", *_NAMES]


def __getattr__(name: str):
    if name == "train":  # the subpackage, callable as sgdlab.train.train
        return import_module("sgdlab.train")
    if name in _NAMES:
        value = getattr(import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sgdlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
