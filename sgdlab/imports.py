"""User code by import path: ``"package.module:callable"`` in ``model.name``, ``data.name``
and ``train.loss``.

The module is imported as Python imports any module, with two folders added to the end of
``sys.path`` (installed packages come first): the current directory, and the folder of
every config or grid file read in this process (so a package next to its config file is
found). Worker processes inherit ``sys.path`` and import the path themselves. Every
failure (no such module, the module raising while imported, no such attribute, an object
that is not callable, an option the callable does not take) is a
:class:`~sgdlab.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sgdlab.errors import ConfigError

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")
WHERE = "looked in the installed packages, the current directory and the config file's folder"


def is_import_path(name: Any) -> bool:
    """Whether a registry name is meant as an import path (it has a colon)."""
    return isinstance(name, str) and ":" in name


def check_syntax(field: str, path: str) -> None:
    """ConfigError unless ``path`` reads ``package.module:callable``."""
    if not IMPORT_PATH.fullmatch(path):
        raise ConfigError(f"{field}: {path!r} is not an import path of the form "
                          "'package.module:callable'")


def add_search_folder(folder: str | Path) -> None:
    """Let import paths find modules in ``folder`` (appended to ``sys.path`` once)."""
    folder = str(Path(folder).expanduser().absolute())
    if folder not in sys.path:
        sys.path.append(folder)


def resolve(field: str, path: str) -> Callable:
    """The callable ``path`` names (ConfigError naming ``field`` if it cannot be had)."""
    check_syntax(field, path)
    module_name, _, attribute = path.partition(":")
    add_search_folder(os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigError(f"{field}: {path!r}: no module named {missing!r} ({WHERE})"
                              ) from None
        raise ConfigError(f"{field}: {path!r}: importing {module_name} failed "
                          f"(ModuleNotFoundError: {exc})") from None
    except Exception as exc:  # the user's module raised while it was imported
        raise ConfigError(f"{field}: {path!r}: importing {module_name} failed "
                          f"({type(exc).__name__}: {exc})") from None
    where = module_name
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{field}: {path!r}: {where} has no attribute {part!r}")
        obj = getattr(obj, part)
        where = f"{where}.{part}"
    if not callable(obj):
        raise ConfigError(f"{field}: {path!r} is a {type(obj).__name__}, not a callable")
    return obj


def check_signature(field: str, fn: Callable, positional: int,
                    options: dict[str, Any] | None = None, options_field: str = "") -> None:
    """ConfigError naming ``field`` unless ``fn`` takes ``positional`` arguments, and naming
    ``options_field.<key>`` unless it also takes every key of ``options`` as a keyword."""
    options = options or {}
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: let the call tell
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    free = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(free) < positional and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise ConfigError(f"{field}: {getattr(fn, '__qualname__', fn)!r} takes "
                          f"{len(free)} positional arguments; it is called with {positional}")
    known = [p.name for p in params[positional:]
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in options:
        if key not in known:
            raise ConfigError(f"{options_field}.{key}: not an option of {fn.__qualname__} "
                              f"(its options: {', '.join(known) or 'none'})")
