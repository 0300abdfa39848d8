"""`pip install .` without extras (what the Dockerfile does) gives a package whose every module
imports and whose CLI runs: every imported third-party package is declared."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_plain_install_imports_every_module_and_runs_the_cli(tmp_path: Path) -> None:
    # Build from a copy: setuptools leaves build/ next to the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".unityplan", "build", "*.egg-info", "__pycache__", "node_modules"
        ),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    script = (
        "import importlib, pkgutil, sys\n"
        f"packages = {packages!r}\n"
        "failed = []\n"
        "for name in packages:\n"
        "    package = importlib.import_module(name)\n"
        "    where = list(package.__path__)\n"
        "    assert all('site-packages' in p for p in where), (name, where)\n"
        "    for info in pkgutil.iter_modules(package.__path__, name + '.'):\n"
        "        try:\n"
        "            importlib.import_module(info.name)\n"
        "        except Exception as exc:\n"
        "            failed.append(f'{info.name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    # Run outside the repository, so only the installed copy can be imported.
    imported = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr

    cli = subprocess.run(
        [str(venv / "bin" / "unityplan"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "registration" in cli.stdout and "run" in cli.stdout
