"""What gets installed: one package of ours (shepherd.core, shepherd.tui), a free
distribution name, the console script `shepherd` — and no top-level `core` or `tui`."""

from __future__ import annotations

import configparser
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed() -> None:
    """A new folder with an __init__.py must be in pyproject's list, or the wheel lacks it."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"shepherd." + ".".join(p.parent.relative_to(ROOT).parts)
             for top in ("core", "tui") for p in (ROOT / top).rglob("__init__.py")}
    assert found | {"shepherd"} == listed


def test_the_wheel_installs_shepherd_core_and_tui_only(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("shepherd_agents-")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    tops = {n.split("/")[0] for n in names}
    assert tops == {"shepherd", next(t for t in tops if t.endswith(".dist-info"))}
    assert "shepherd/tui/css/session.tcss" in names and "shepherd/tui/css/home.tcss" in names and "shepherd/core/demo/demo.toml" in names
    ep = configparser.ConfigParser()
    ep.read(tmp_path / "site" / next(t for t in tops if t.endswith(".dist-info")) / "entry_points.txt")
    assert ep["console_scripts"]["shepherd"] == "shepherd.tui.cli:main"
    # Only the wheel on the path (-S: no site-packages, so no editable checkout either; -E: no
    # PYTHONPATH, which points at a checkout when the suite runs from one without an install).
    code = ("import importlib.util, sys; sys.path[:0] = [sys.argv[1]]\n"
            "import shepherd.core.states, shepherd.core.events\n"
            "assert shepherd.core.states.__file__.startswith(sys.argv[1]), shepherd.core.states.__file__\n"
            "assert importlib.util.find_spec('core') is None and importlib.util.find_spec('tui') is None\n")
    subprocess.run([sys.executable, "-S", "-E", "-c", code, str(tmp_path / "site")], check=True, cwd=tmp_path)
