"""Build hook: compile the customer stage's pure core with mypyc where a C compiler exists.

The modules in ``COMPILED_MODULES`` are ordinary typed Python. mypyc turns them into
extension modules at install time (about three times faster on the fold); where the build
cannot compile them (no compiler, no mypyc), the install goes on and the same files run
interpreted, with the same results. Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import logging
from typing import Any

from setuptools import Extension, setup

# One source for each hot loop: these files run compiled where they can, interpreted where not.
COMPILED_MODULES = [
    "stream_app/customers/timeline.py",
    "stream_app/customers/partition.py",
    "stream_app/kpis/windows.py",
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


# The intake's byte reader in C, until the declared path (schemas/events.py) matches its speed.
INTAKE_C = Extension(
    "stream_app.customers._intake",
    sources=["stream_app/customers/_intake.c"],
    optional=True,
    extra_compile_args=["-O2"],
)

setup(ext_modules=[INTAKE_C, *compiled_extensions()])
