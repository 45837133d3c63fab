"""The loss landscape of a stored run: slices, a line to another run, the trajectory plane.

Each function rebuilds the run (:func:`sgdlab.train.restore.restore`: its model at the
final weights, its data, its loss), computes with :mod:`sgdlab.landscape`, and only then
writes the result into the run folder as ``arrays/landscape-<what>/<step>.npz`` (the
arrays of :meth:`~sgdlab.landscape.Slice.to_arrays` or
:meth:`~sgdlab.landscape.PathValues.to_arrays`, metadata included), so a bad input writes
nothing. The run's HTML report draws every ``landscape-*`` array from the store
(:mod:`sgdlab.report.landscape_figures`).

Evaluation data: ``split`` ("train" or "test") of the run's own data, all of it
(``subset=None``) or ``subset`` examples fixed by ``subset_seed``
(:func:`sgdlab.landscape.fixed_subset`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sgdlab.errors import SgdlabError
from sgdlab.landscape import (
    Layout,
    fixed_subset,
    interpolate,
    loss_slice,
    trajectory_pca,
    trajectory_plane,
)
from sgdlab.store import Run, Store
from sgdlab.train.restore import RestoredRun, restore

PREFIX = "landscape-"
SPLITS = ("train", "test")
HISTORY = "trajectory"  # the arrays the trajectory probe stores


@dataclass
class Written:
    """What a landscape command stored: the array name and file, and the result."""

    name: str
    path: Path
    result: object
    seconds: float


def evaluation_data(r: RestoredRun, split: str = "train", subset: int | None = 2048,
                    subset_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) pair a landscape of run ``r`` is evaluated on."""
    if split not in SPLITS:
        raise SgdlabError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")
    x, y = (r.data.x_train, r.data.y_train) if split == "train" else (r.data.x_test,
                                                                         r.data.y_test)
    if subset is None or subset <= 0 or subset >= len(y):
        return x, y
    return fixed_subset((x, y), int(subset), subset_seed)


def array_name(what: str) -> str:
    """``landscape-<what>`` with characters the store refuses replaced by '_'."""
    return PREFIX + re.sub(r"[^A-Za-z0-9_.-]+", "_", what)


def _save(run: Run, name: str, step: int | None, arrays: dict) -> Path:
    step = int(step or 0)
    run.save_arrays(name, step, arrays)
    return run.path / "arrays" / name / f"{step:09d}.npz"


def _directions(spec, layout: Layout):
    """``"random"`` / ``"hessian"`` as they are; a path: the (k, P) array of a .npy file
    or the ``directions`` of an .npz (e.g. another slice's stored arrays)."""
    if spec in ("random", "hessian"):
        return spec, spec
    path = Path(spec)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if "directions" not in f.files:
                    raise SgdlabError(f"{path}: has no array 'directions'")
                vectors = f["directions"]
        else:
            vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SgdlabError(f"{path}: cannot read directions ({exc})") from None
    return torch.as_tensor(np.asarray(vectors)), "given"


def slice_run(store: Store, run_id: str, *, dims: int = 2, directions="random",
              seed: int = 0, span: float = 1.0, num: int | None = None,
              split: str = "train", subset: int | None = 2048, subset_seed: int = 0,
              bn: str = "eval", name: str | None = None, **options) -> Written:
    """A 1-D (``dims=1``) or 2-D slice through the run's final weights along
    ``directions`` ("random": filter-normalized Gaussian draws of ``seed``; "hessian": the
    top eigenvectors on the evaluation data; a path to stored directions), on ``num``
    points per axis (51 for a line, 21 for a plane) in [−span, span]."""
    if dims not in (1, 2):
        raise SgdlabError(f"dims: must be 1 or 2, got {dims}")
    if not span > 0:
        raise SgdlabError(f"span: must be > 0, got {span}")
    num = num or (51 if dims == 1 else 21)
    if num < 2:
        raise SgdlabError(f"num: must be >= 2, got {num}")
    run = store.get_run(run_id)
    r = restore(run)
    data = evaluation_data(r, split, subset, subset_seed)
    spec, label = _directions(directions, Layout.of(r.model))
    axes = [np.linspace(-span, span, num)] * dims
    s = loss_slice(r.model, r.loss_fn, data, axes, directions=spec, seed=seed, bn=bn,
                   **options)
    s.meta.update({"run": run.id, "split": split, "subset": subset, "subset_seed": subset_seed,
                   "step": r.step})
    what = name or f"{'line' if dims == 1 else 'plane'}-{label}" + (
        "" if split == "train" else f"-{split}")
    path = _save(run, array_name(what), r.step, s.to_arrays())
    return Written(array_name(what), path, s, s.meta["seconds"])


def interpolate_runs(store: Store, run_id: str, other_id: str, *, num: int = 25,
                     extend: float = 0.0, split: str = "train", subset: int | None = 2048,
                     subset_seed: int = 0, bn: str = "eval", name: str | None = None,
                     **options) -> Written:
    """The straight line from the run's final weights (t = 0) to another run's (t = 1), on
    ``num`` points of [−extend, 1 + extend], evaluated on the first run's data. The other
    run must have the same architecture (one error line naming the first parameter that
    differs)."""
    if num < 2 or extend < 0:
        raise SgdlabError(f"num must be >= 2 and extend >= 0, got num={num}, extend={extend}")
    run, other = store.get_run(run_id), store.get_run(other_id)
    r = restore(run)
    layout = Layout.of(r.model)
    end = layout.vector(restore(other).model, f"run {other.id}")
    data = evaluation_data(r, split, subset, subset_seed)
    ts = np.linspace(-extend, 1 + extend, num)
    p = interpolate(r.model, r.loss_fn, data, r.model, end, ts, bn=bn, **options)
    p.meta.update({"run": run.id, "other": other.id, "split": split, "subset": subset,
                   "subset_seed": subset_seed, "step": r.step})
    what = name or f"line-to-{other.id}" + ("" if split == "train" else f"-{split}")
    path = _save(run, array_name(what), r.step, p.to_arrays())
    return Written(array_name(what), path, p, p.meta["seconds"])


@dataclass
class HistorySize:
    """A stored parameter history: points, parameters, dtype, bytes raw and on disk."""

    points: int
    parameters: int
    dtype: str
    raw_bytes: int
    disk_bytes: int

    def __str__(self) -> str:
        return (f"{self.points} points × {self.parameters:,} parameters ({self.dtype}): "
                f"{size(self.raw_bytes)} raw, {size(self.disk_bytes)} on disk")


def size(nbytes: int) -> str:
    """Bytes in kB below 1 MB, else in MB (binary units)."""
    return f"{nbytes / 2**10:.1f} kB" if nbytes < 2**20 else f"{nbytes / 2**20:.1f} MB"


def history(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(steps, points (T, P)) of the run's ``trajectory`` probe; one error line if none."""
    if HISTORY not in run.array_names():
        raise SgdlabError(f"run {run.id} has no parameter history: train it with a "
                          "trajectory probe ([[probes]] name = \"trajectory\", every = 50)")
    items = run.load_arrays(HISTORY)
    return np.array([s for s, _ in items]), np.stack([a["theta"] for _, a in items])


def history_size(run: Run) -> HistorySize:
    steps, block = history(run)
    files = (run.path / "arrays" / HISTORY).glob("*.npz")
    return HistorySize(len(steps), block.shape[1], str(block.dtype), block.nbytes,
                       sum(f.stat().st_size for f in files))


def trajectory_run(store: Store, run_id: str, *, num: int = 21, margin: float = 0.2,
                   split: str = "train", subset: int | None = 2048, subset_seed: int = 0,
                   bn: str = "eval", name: str | None = None, **options) -> Written:
    """The run's parameter history on its first two principal directions around the final
    point (Li et al. 2018), over the loss on that plane (``num`` × ``num`` points covering
    the path with ``margin``). Stored with the path's coordinates and steps."""
    run = store.get_run(run_id)
    steps, block = history(run)
    r = restore(run)
    layout = Layout.of(r.model)
    if block.shape[1] != layout.dim:
        raise SgdlabError(f"run {run.id}: its history has {block.shape[1]} entries per point, "
                          f"the model {layout.dim} parameters")
    if len(steps) < 3:
        raise SgdlabError(f"run {run.id}: its history has {len(steps)} points; a plane needs 3")
    dtype = next(r.model.parameters()).dtype
    pca = trajectory_pca(torch.from_numpy(block).to(dtype), layout, k=2)
    data = evaluation_data(r, split, subset, subset_seed)
    plane = trajectory_plane(r.model, r.loss_fn, data, pca, num=num, margin=margin, bn=bn,
                             **options)
    plane.meta.update({"run": run.id, "split": split, "subset": subset,
                       "subset_seed": subset_seed,
                       "step": r.step, "history": vars(history_size(run))})
    payload = plane.to_arrays()
    payload.update({"path_coordinates": pca.coordinates, "path_steps": steps,
                    "explained": pca.explained})
    what = name or "trajectory" + ("" if split == "train" else f"-{split}")
    path = _save(run, array_name(what), r.step, payload)
    return Written(array_name(what), path, plane, plane.meta["seconds"])
