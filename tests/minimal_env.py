"""A Python environment holding only the named distributions (and their own dependencies, named too), built
offline from this virtualenv's installed files: a target device with nothing but a runtime."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path


def top_level_entries(name: str) -> set[str]:
    """The site-packages entries (packages, modules, .libs folders, dist-info) a distribution installed."""
    dist = metadata.distribution(name)
    entries = set()
    for file in dist.files or ():
        first = file.parts[0]
        if first not in ("..", "__pycache__"):
            entries.add(first)
    return entries


def minimal_env(root: Path, distributions: list[str]) -> Path:
    """A venv (no pip) whose only importable third-party code is ``distributions``; returns its python."""
    site = root / "site"
    site.mkdir(parents=True)
    source = Path(metadata.distribution("numpy").locate_file(""))
    for name in distributions:
        for entry in top_level_entries(name):
            if (source / entry).exists() and not (site / entry).exists():
                (site / entry).symlink_to(source / entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    (venv_site / "deps.pth").write_text(f"{site}\n")
    return python


def clean_env() -> dict[str, str]:
    """No PYTHONPATH, no user site: what the minimal python sees is only its own folders."""
    return {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1", "HOME": str(Path.home())}


def installed(python: Path) -> list[str]:
    """``name==version`` of every distribution the environment holds (pip freeze, without pip)."""
    out = subprocess.run([str(python), "-c", "from importlib import metadata\n"
                          "print('\\n'.join(sorted(f\"{d.metadata['Name']}=={d.version}\" "
                          "for d in metadata.distributions())))"],
                         check=True, capture_output=True, text=True, env=clean_env(),
                         cwd=python.parent).stdout  # not the clone's root: its cakd.egg-info would count
    return out.split()
