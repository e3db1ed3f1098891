"""Package faces that import a module only when one of its names is first used (PEP 562).

A package whose modules pull heavy dependencies (torch for weights, matplotlib for the report)
or many siblings names its public face this way, so that importing one module of it never loads
the others: `from ofa_eval.artifacts.run_format import MANIFEST` stays as cheap as before.
"""

from __future__ import annotations

import importlib


def lazy_face(package: str, exports: dict[str, str]):
    """`(__getattr__, __dir__)` for `package`, whose public names live in its modules ({name: module})."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
