"""Which user modules raykd may import as models: the ``RAYKD_MODEL_ALLOWLIST`` setting.

A model ``{"name": "module", "path": "pkg.mod:Class"}`` names code to import. raykd
imports it only when the module ``pkg.mod`` is on the allowlist that *whoever runs
raykd* sets in the environment of the process that validates or runs the job:

- ``raykd run`` / ``raykd validate``: the user's own shell;
- the control plane (``raykd serve``): the operator's environment of the server, which
  also hands the setting to the jobs it submits to Ray; a submitted spec can never
  widen it.

``RAYKD_MODEL_ALLOWLIST`` is a comma-separated list of module prefixes, e.g.
``mymodels,acme.nets``. A prefix allows the module itself and every module below it
(``acme.nets`` allows ``acme.nets`` and ``acme.nets.resnet``, not ``acme.netsx`` nor
``acme``). Unset or empty: no user module is allowed. Checking a path imports nothing.

Torch-free and Ray-free: the spec imports this module.
"""

from __future__ import annotations

import os
import re

ALLOWLIST_ENV = "RAYKD_MODEL_ALLOWLIST"
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_PATTERN = rf"^{_NAME}(\.{_NAME})*:{_NAME}$"
"""``package.module:Attribute``: a dotted module name, a colon, one attribute name."""


class NotAllowedError(ValueError):
    """A model import path that is malformed or not on the allowlist (the spec says why)."""


def allowlist(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The module prefixes of ``RAYKD_MODEL_ALLOWLIST`` in ``environ`` (default: this process's)."""
    raw = (os.environ if environ is None else environ).get(ALLOWLIST_ENV, "")
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def allowlist_env() -> dict[str, str]:
    """``{RAYKD_MODEL_ALLOWLIST: ...}`` when this process has the setting, for the environment
    of the jobs and workers it starts (the control plane's jobs, a local Ray's workers)."""
    value = os.environ.get(ALLOWLIST_ENV, "")
    return {ALLOWLIST_ENV: value} if value.strip() else {}


def split_path(path: str) -> tuple[str, str]:
    """``("pkg.mod", "Class")`` of ``"pkg.mod:Class"``; NotAllowedError when malformed."""
    if not isinstance(path, str) or not re.match(PATH_PATTERN, path):
        raise NotAllowedError(
            f"model path {path!r} is not of the form 'package.module:Class' (a dotted module "
            "name, a colon, a class or function name)")
    module, attr = path.split(":")
    return module, attr


def is_allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or lies below one of them."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def check_path(path: str, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """``(module, attribute)`` of an allowed path; NotAllowedError naming the path and the
    setting otherwise. Imports nothing."""
    module, attr = split_path(path)
    prefixes = allowlist(environ)
    if not is_allowed(module, prefixes):
        now = ",".join(prefixes) if prefixes else "unset"
        raise NotAllowedError(
            f"model path {path!r} is not allowed: module {module!r} is not on the allowlist "
            f"{ALLOWLIST_ENV} (now {now}); whoever runs raykd allows it with "
            f"{ALLOWLIST_ENV}={module.split('.')[0]} in the environment of `raykd run` or of "
            "the `raykd serve` server")
    return module, attr
