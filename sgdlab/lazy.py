"""Names a package exports without importing their modules (PEP 562).

``__getattr__ = lazy_names(__name__, {"run_sweep": ".execute", ...})`` in a package's
``__init__`` imports a name's module on first use (a leading dot: relative to the package),
so that importing the package, as ``sgdlab --help`` does, imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_names(package: str, names: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__``: ``name`` from the module ``names[name]``."""

    def __getattr__(name: str) -> object:
        if name in names:
            return getattr(import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
