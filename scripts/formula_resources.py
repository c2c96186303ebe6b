"""Print the `resource` blocks of Formula/mlx-server.rb, as `brew update-python-resources`
would: the runtime dependency closure of mlx-server on macOS arm64 (resolved from the
installed environment), each pinned to its PyPI sdist and that file's sha256.

    .venv/bin/python scripts/formula_resources.py > /tmp/resources.rb

Packages that Homebrew ships as formulae (mlx, numpy, certifi) are left to `depends_on`.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import sys
import urllib.request
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# Provided by Homebrew formulae (`depends_on`), not resources.
FORMULAE = {"mlx": "mlx", "mlx-metal": "mlx", "numpy": "numpy", "certifi": "certifi"}
MACOS_ARM64 = {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix",
               "platform_machine": "arm64", "python_version": "3.13",
               "python_full_version": "3.13.0", "implementation_name": "cpython",
               "platform_python_implementation": "CPython", "extra": ""}


def runtime_requirements() -> list[Requirement]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]


def closure() -> dict[str, str]:
    """name -> installed version, for every package mlx-server needs at run time on macOS."""
    found: dict[str, str] = {}
    todo = runtime_requirements()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found or (req.marker and not req.marker.evaluate(MACOS_ARM64)):
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # e.g. mlx-metal, which only exists on macOS
            found[name] = ""
            continue
        found[name] = dist.version
        todo += [Requirement(r) for r in dist.requires or []]
    return dict(sorted(found.items()))


def sdist(name: str, version: str) -> tuple[str, str]:
    """The sdist's URL and sha256, from PyPI's simple index (what pip itself reads)."""
    req = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        files = json.load(r)["files"]
    stem = re.sub(r"[-_.]+", "[-_.]", name)
    pattern = re.compile(rf"{stem}-{re.escape(version)}\.tar\.gz", re.I)
    for f in files:
        if pattern.fullmatch(f["filename"]):
            return f["url"], f["hashes"]["sha256"]
    raise LookupError(f"no sdist for {name} {version}")


def main() -> int:
    missing = []
    for name, version in closure().items():
        if name in FORMULAE:
            continue
        try:
            url, sha = sdist(name, version)
        except LookupError as e:
            missing.append(str(e))
            continue
        print(f'  resource "{name}" do\n    url "{url}"\n    sha256 "{sha}"\n  end\n')
        print(f"{name} {version}", file=sys.stderr)
    for problem in missing:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
