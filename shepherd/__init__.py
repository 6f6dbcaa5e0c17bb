"""Shepherd: supervise AI coding agents. The code lives in ``shepherd.core`` (the engine,
the store, the backends; no Textual) and ``shepherd.tui`` (the app and the command line).

In the repository these are the top-level folders ``core/`` and ``tui/`` (installed under
this package by pyproject's package-dir mapping). Run from a checkout without installing
(``PYTHONPATH=.``), this package finds them beside itself.
"""

from __future__ import annotations

import os

_here = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(_here, "core")):
    _checkout = os.path.dirname(_here)
    if os.path.isfile(os.path.join(_checkout, "core", "__init__.py")):
        __path__.append(_checkout)  # type: ignore[name-defined]  # (the package's own __path__)
