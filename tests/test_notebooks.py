"""The numbered notebooks: paired with their jupytext scripts, committed clean, and run top to bottom.

Each notebook runs in FAST mode (``PATCHCORE_KIT_FAST=1``: tiny demo data, small images) in a
fresh kernel. All notebooks of a session share one data folder in a temporary directory, so the
demo data and the backbone features are made once and the repository's ``data/`` is not touched.
The kernel is the ``python3`` kernel spec; jupyter_client starts it with the interpreter running
these tests (``sys.executable``), i.e. the project's virtual environment.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
WITH_WIDGETS = {"02_coreset_umap", "03_sample_efficiency", "04_segmentation_gallery", "05_decisions"}
#: Notebooks whose sections end in exercises: each needs a checker call and a hidden solution cell.
WITH_EXERCISES = {"01_feature_extraction", "02_coreset_umap", "03_sample_efficiency", "04_segmentation_gallery"}
CELL_TIMEOUT_S = 600  # generous: CI machines are slow and shared; a hang still ends


def _ids(paths):
    return [p.stem for p in paths]


def test_the_numbered_notebooks_are_all_there():
    names = [p.stem for p in NOTEBOOKS]
    for wanted in (
        "00_overview",
        "01_feature_extraction",
        "02_coreset_umap",
        "03_sample_efficiency",
        "04_segmentation_gallery",
        "05_decisions",
        "06_your_own_images",
    ):
        assert wanted in names
    scripts = {p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py")}
    assert scripts == set(names), "every notebook has a jupytext .py twin and vice versa"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_and_script_hold_the_same_cells(path):
    notebook = nbformat.read(path, as_version=4)
    script = jupytext.read(path.with_suffix(".py"))
    assert notebook.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    pairs = list(zip(notebook.cells, script.cells))
    assert len(notebook.cells) == len(script.cells), f"{path.name}: run `jupytext --sync {path.with_suffix('.py')}`"
    for index, (ours, theirs) in enumerate(pairs):
        assert (ours.cell_type, ours.source) == (theirs.cell_type, theirs.source), f"{path.name}: cell {index} differs"
        assert ours.metadata.get("tags", []) == theirs.metadata.get("tags", []), f"{path.name}: cell {index} tags"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {index} has outputs"
    assert "widgets" not in notebook.metadata, f"{path.name}: saved widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_reads_the_fast_switch_in_a_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, f"{path.name}: one cell tagged 'parameters'"
    assert 'os.environ.get("PATCHCORE_KIT_FAST"' in parameters[0].source
    assert 'os.environ.get("PATCHCORE_KIT_DATASET")' in parameters[0].source
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert first_code is parameters[0], f"{path.name}: the parameters cell comes first"


@pytest.mark.parametrize(
    "path",
    [p for p in NOTEBOOKS if p.stem in WITH_EXERCISES],
    ids=_ids([p for p in NOTEBOOKS if p.stem in WITH_EXERCISES]),
)
def test_notebook_has_three_exercises_with_checkers_and_hidden_solutions(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    solutions = [c for c in code if "solution" in c.metadata.get("tags", [])]
    exercises = [c for c in code if "raise NotImplementedError" in c.source and "check_" in c.source]
    assert len(exercises) >= 3, f"{path.name}: {len(exercises)} exercise cells (unsolved function + checker)"
    assert len(solutions) >= len(exercises), f"{path.name}: every exercise needs a solution cell"
    for cell in solutions:
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True, f"{path.name}: solution not hidden"
        assert "assert check_" in cell.source, f"{path.name}: a solution must pass its checker (CI runs it)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_states_its_running_time(path):
    notebook = nbformat.read(path, as_version=4)
    text = " ".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "Running time" in text and "FAST" in text, f"{path.name}: say how long it runs, FAST and full"


@pytest.fixture(scope="session")
def notebook_data(tmp_path_factory) -> Path:
    """One data folder (demo data, feature cache, UMAP cache, sweep results) for all notebooks."""
    return tmp_path_factory.mktemp("notebook_data")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom_in_fast_mode(path, notebook_data, monkeypatch):
    monkeypatch.setenv("PATCHCORE_KIT_FAST", "1")
    monkeypatch.setenv("PATCHCORE_KIT_DATA", str(notebook_data))
    for name in ("PATCHCORE_KIT_DATASET", "PATCHCORE_KIT_FORMAT", "PATCHCORE_KIT_CATEGORY"):
        monkeypatch.delenv(name, raising=False)  # the demo data, whatever the developer's shell says
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute()  # raises CellExecutionError (with the traceback) when a cell or an assert fails

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert figures, f"{path.name}: no figure was drawn"
    if path.stem in WITH_WIDGETS:
        assert widgets, f"{path.name}: the explorer widget was not displayed"
    assert not [o for o in outputs if o.get("output_type") == "error"]
