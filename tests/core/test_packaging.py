"""The wheel lists its packages by hand (setuptools package-dir maps the folders into the
`baihua` namespace), so a new subpackage must be added there; `.ci/wheel-check` would find a
missing one only at the end of CI."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_in_the_wheel() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools["package-dir"]
    on_disk = {
        ".".join([name, *init.parent.relative_to(ROOT / folder).parts])
        for name, folder in folders.items()
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert on_disk - set(setuptools["packages"]) == set()
    assert set(setuptools["packages"]) - on_disk == set()
