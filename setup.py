"""Build hook: compile typed Python hot spots with mypyc where a C compiler exists.

The modules in ``COMPILED_MODULES`` are ordinary typed Python. mypyc turns them into
extension modules at install time; where the build cannot compile them (no compiler, no
mypyc), the install goes on and the same files run interpreted, with the same results
(tests/test_compiled_parity.py runs both). Everything else is in pyproject.toml.
"""

from __future__ import annotations

import logging
from typing import Any

from setuptools import Extension, setup

# One source for each hot loop: these files run compiled where they can, interpreted where not.
COMPILED_MODULES = [
    "stream_app/kpis/formulas.py",
    "schemas/rules.py",
]


def compiled_extensions() -> list[Any]:
    try:
        from mypyc.build import mypycify
    except ImportError:
        logging.warning("mypyc is not installed: %s will run interpreted", COMPILED_MODULES)
        return []
    # Without the project's mypy configuration (its plugins need packages a build
    # environment lacks): imports it cannot resolve are typed as Any, which mypyc accepts.
    options = ["--config-file=", "--ignore-missing-imports", "--follow-imports=silent"]
    try:
        # One shared library inside the package (the default name is a hash at top level,
        # which an editable install cannot import).
        extensions = mypycify(
            [*options, *COMPILED_MODULES], opt_level="3", group_name="stream_app._native"
        )
    except (Exception, SystemExit):  # mypyc refused (it exits): build interpreted instead
        logging.exception("mypyc could not compile %s; they will run interpreted", COMPILED_MODULES)
        return []
    for extension in extensions:
        extension.optional = True  # a failed C compile leaves the module interpreted
    return extensions


# The intake fast path and the customer fold in C, until the same typed Python compiled
# matches them (docs/benchmarks.md); each has a Python twin that runs where they are not built.
C_EXTENSIONS = [
    Extension(
        f"stream_app.customers.{name}",
        sources=[f"stream_app/customers/{name}.c"],
        optional=True,
        extra_compile_args=["-O2"],
    )
    for name in ("_intake", "_fold")
]

setup(ext_modules=[*C_EXTENSIONS, *compiled_extensions()])
