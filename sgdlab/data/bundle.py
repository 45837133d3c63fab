"""``load_data``: config + seed -> a device-resident :class:`DataBundle`.

Pipeline: source (full dataset) -> seeded subsets of train and test (always through a
permutation: the offline copies are sorted by class) -> [0, 1] units for images -> label
noise and input corruption on the training subset -> normalization -> optional flattening
-> tensors on the device.

Normalization statistics come from the training subset *after* input corruption, i.e. from
the inputs the network is trained on (with ``input_corruption_fraction=1`` the corrupted
inputs are normalized like any dataset); the test set uses the same statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sgdlab.config import DataConfig
from sgdlab.data import transforms as T
from sgdlab.data.sources import load_source
from sgdlab.errors import ConfigError, DataError
from sgdlab.imports import is_import_path


@dataclass
class DataBundle:
    """A dataset on one device. ``input_scale`` (shape ``input_shape``) is
    d(normalized input) / d(raw input in [0, 1] units; stored units for vector data), used to
    express adversarial radii given in pixel units."""

    name: str
    task: str  # "classification" | "regression"
    x_train: torch.Tensor  # (n, *input_shape)
    y_train: torch.Tensor  # (n,) int64, possibly noisy | (n, d) float targets
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_train_clean: torch.Tensor  # labels before label noise
    label_corrupted: torch.Tensor  # (n,) bool
    input_corrupted: torch.Tensor  # (n,) bool
    n_classes: int  # classes, or output dimension for regression
    input_shape: tuple[int, ...]
    input_scale: torch.Tensor
    source: str = ""  # file, folder or generator the data came from

    @classmethod
    def from_tensors(cls, x_train: torch.Tensor, y_train: torch.Tensor,
                     x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                     n_classes: int | None = None, name: str = "tensors") -> DataBundle:
        """Wrap a user's own tensors (no corruption, unit input scale), e.g. to use probes
        in a training loop of one's own. Integer labels make a classification task."""
        x_test = x_train[:0] if x_test is None else x_test
        y_test = y_train[:0] if y_test is None else y_test
        classification = not y_train.is_floating_point()
        if n_classes is None:
            n_classes = int(y_train.max()) + 1 if classification else y_train.shape[-1]
        none = torch.zeros(len(x_train), dtype=torch.bool, device=x_train.device)
        return cls(name, "classification" if classification else "regression", x_train, y_train,
                   x_test, y_test, y_train, none, none.clone(), n_classes,
                   tuple(x_train.shape[1:]), torch.ones(x_train.shape[1:], dtype=x_train.dtype,
                                                        device=x_train.device))

    @property
    def corrupted(self) -> torch.Tensor:
        """Examples with a corrupted label or input."""
        return self.label_corrupted | self.input_corrupted

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)


def load_data(
    cfg: DataConfig,
    seed: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DataBundle:
    """Load, subset, corrupt and normalize the dataset of ``cfg``; all randomness from ``seed``."""
    cfg.check()
    if cfg.name == "teacher-student" and cfg.label_noise > 0:
        raise ConfigError(
            "data.label_noise: teacher-student is a regression task; use data.noise_std"
        )
    if is_import_path(cfg.name):
        from sgdlab.data.user import load_user

        raw = load_user(cfg, seed)
    else:
        raw = load_source(cfg, seed)
    if len(raw.x_train) == 0:
        raise DataError(f"{raw.source}: no training examples in this dataset")
    classification = raw.task == "classification"
    x_train, y_train, x_test, y_test = raw.x_train, raw.y_train, raw.x_test, raw.y_test
    if not raw.generated:
        strat = cfg.stratified and classification
        tr = T.subset_indices(y_train, cfg.n_train, seed, "subset-train", strat, raw.n_classes,
                              "data.n_train", f"training examples of {raw.name}")
        te = T.subset_indices(y_test, cfg.n_test, seed, "subset-test", strat, raw.n_classes,
                              "data.n_test", f"test examples of {raw.name}")
        x_train, y_train, x_test, y_test = x_train[tr], y_train[tr], x_test[te], y_test[te]

    work = np.float64 if dtype == torch.float64 else np.float32
    x_train, x_test = x_train.astype(work), x_test.astype(work)  # copies
    if raw.pixel_max is not None:
        x_train /= raw.pixel_max
        x_test /= raw.pixel_max
    y_clean = y_train
    label_mask = np.zeros(len(y_train), dtype=bool)
    if classification and cfg.label_noise > 0:
        y_train, label_mask = T.label_noise(y_train, cfg.label_noise, raw.n_classes, seed)
    channels = x_train.shape[1] if raw.pixel_max is not None else 0
    x_train, input_mask = T.corrupt_inputs(
        x_train, cfg.input_corruption, cfg.input_corruption_fraction, seed, channels, inplace=True)
    x_train, x_test, scale = T.normalize(x_train, x_test, cfg.normalize, raw.pixel_max)
    if cfg.flatten:
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
        scale = scale.reshape(-1)

    def tensor(a: np.ndarray, kind: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=kind)

    ydtype = torch.int64 if classification else dtype
    return DataBundle(
        name=raw.name,
        task=raw.task,
        x_train=tensor(x_train, dtype),
        y_train=tensor(y_train, ydtype),
        x_test=tensor(x_test, dtype),
        y_test=tensor(y_test, ydtype),
        y_train_clean=tensor(y_clean, ydtype),
        label_corrupted=tensor(label_mask, torch.bool),
        input_corrupted=tensor(input_mask, torch.bool),
        n_classes=raw.n_classes,
        input_shape=tuple(x_train.shape[1:]),
        input_scale=tensor(scale, dtype),
        source=raw.source,
    )
