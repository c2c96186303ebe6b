"""Install paths: the wheel and sdist `python -m build` makes, the Homebrew formula (its
Ruby parses; its resources match pyproject.toml), the CHANGELOG and the docs' examples."""

from __future__ import annotations

import importlib.util
import json
import plistlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlx_server import __version__
from mlx_server.cli import parse_args

ROOT = Path(__file__).resolve().parents[2]
FORMULA = ROOT / "Formula" / "mlx-server.rb"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Dependencies Homebrew provides as formulae rather than as resources.
FORMULA_DEPS = {"mlx": "mlx", "mlx-metal": "mlx", "numpy": "numpy", "certifi": "certifi"}
needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason="needs ruby")


def runtime_requirements() -> list[Requirement]:
    return [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]


@pytest.fixture(scope="module")
def formula() -> dict:
    out = subprocess.run(["ruby", str(Path(__file__).with_name("formula_dsl.rb")), str(FORMULA)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def sdist_version(name: str, url: str) -> str:
    stem = re.sub(r"[-_.]+", "[-_.]", name)
    m = re.fullmatch(rf".*/{stem}-(.+)\.tar\.gz", url, re.I)
    assert m, f"resource {name}: {url} is not its sdist"
    return m.group(1)


# ---------------------------------------------------------------- Homebrew


@needs_ruby
def test_formula_ruby_parses():
    out = subprocess.run(["ruby", "-c", str(FORMULA)], capture_output=True, text=True)
    assert out.returncode == 0 and "Syntax OK" in out.stdout, out.stderr


@needs_ruby
def test_formula_is_a_virtualenv_install(formula):
    assert formula["class"] == "MlxServer" and formula["virtualenv"] and formula["install"]
    assert formula["test"] and formula["service"] and formula["license"] == "MIT"
    assert formula["url"].endswith(f"/mlx_server-{__version__}.tar.gz")
    assert re.fullmatch(r"[0-9a-f]{64}", formula["sha256"])
    assert re.search(r"virtualenv_install_with_resources", FORMULA.read_text())
    deps = set(formula["depends_on"])
    assert {"mlx", "numpy", "macos"} <= deps and any(d.startswith("python@3") for d in deps)


@needs_ruby
def test_formula_resources_match_pyproject(formula):
    resources = formula["resources"]
    for name, fields in resources.items():
        assert name == canonicalize_name(name), name
        assert fields["url"].startswith("https://files.pythonhosted.org/packages/"), name
        assert re.fullmatch(r"[0-9a-f]{64}", fields["sha256"]), name
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        if name in FORMULA_DEPS:
            assert FORMULA_DEPS[name] in formula["depends_on"], name
            continue
        assert name in resources, f"{name} is a dependency but not a formula resource"
        version = sdist_version(name, resources[name]["url"])
        assert req.specifier.contains(version, prereleases=True), (name, version, req)


@needs_ruby
def test_formula_resources_cover_the_dependency_closure(formula):
    """Every package mlx-server needs on macOS (as resolved in this environment) is a
    resource or a formula; `scripts/formula_resources.py` regenerates the list."""
    spec = importlib.util.spec_from_file_location("fr", ROOT / "scripts/formula_resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    needed = set(module.closure()) - set(FORMULA_DEPS)
    declared = set(formula["resources"])
    assert needed - declared == set(), "missing resources; run scripts/formula_resources.py"
    assert declared - needed == set(), "resources nothing needs"


# ---------------------------------------------------------------- wheel and sdist


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_wheel_metadata(dist):
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"mlx_server-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"mlx_server-{__version__}.dist-info"
        meta = Parser().parsestr(z.read(f"{info}/METADATA").decode())
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == "mlx-server" and meta["Version"] == __version__
    assert meta["License-Expression"] == "MIT" and meta["Requires-Python"] == ">=3.10"
    assert "llama-server" in meta["Summary"]
    required = {str(Requirement(r)) for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert required == {str(r) for r in runtime_requirements()}
    assert "mlx-server = mlx_server.cli:main" in entry_points
    assert f"{info}/licenses/LICENSE" in names
    assert "mlx_server/py.typed" in names and "mlx_server/server/routes/llama.py" in names
    package = {str(p.relative_to(ROOT)) for p in (ROOT / "mlx_server").rglob("*.py")}
    assert package <= names


def test_sdist_contents(dist):
    (sdist,) = dist.glob("*.tar.gz")
    assert sdist.name == f"mlx_server-{__version__}.tar.gz"
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for required in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", "PKG-INFO",
                     "mlx_server/cli.py", "docs/llmkube/mlx-server.yaml",
                     "docs/launchd/local.mlx-server.plist"):
        assert required in names, required


def test_changelog_names_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in text and "## [Unreleased]" in text


# ---------------------------------------------------------------- docs examples


def test_launchd_example(tmp_path):
    plist = plistlib.loads((ROOT / "docs/launchd/local.mlx-server.plist").read_bytes())
    args = plist["ProgramArguments"]
    assert args[0].endswith("/mlx-server") and plist["RunAtLoad"]
    keys = tmp_path / "keys"
    keys.write_text("k\n")
    args = [str(keys) if prev == "--api-key-file" else a
            for prev, a in zip(args, args[1:], strict=False)]
    assert parse_args(args, env={}).server.api_keys == ("k",)  # the flags it passes are ours
    assert plist["ExitTimeOut"] > parse_args([], env={}).server.drain_timeout_s


def test_llmkube_example():
    docs = list(yaml.safe_load_all((ROOT / "docs/llmkube/mlx-server.yaml").read_text()))
    models = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Model"}
    services = [d for d in docs if d["kind"] == "InferenceService"]
    assert all(d["apiVersion"] == "inference.llmkube.dev/v1alpha1" for d in docs)
    assert any(s["spec"]["runtime"] == "mlx-server" for s in services)
    for s in services:
        model = models[s["spec"]["modelRef"]]
        assert model["spec"]["hardware"]["accelerator"] == "metal"
