"""Execute the notebooks in notebooks/ with small settings and check what they assert.

Each notebook reads ``LIT_MATCHING_NOTEBOOK_SMALL`` in its first code cell; set to ``1`` it
trains on a few batches, so the four run in well under two minutes on 2 CPU cores. The kernel
is this interpreter (``sys.executable``), through a kernel spec written to ``tmp_path``, so the
notebooks import the ``lit_matching`` under test and nothing is registered globally.
"""

import json
import sys
from pathlib import Path

# The dev extra installs these; a missing one is an error, not a skip.
import ipykernel  # noqa: F401
import matplotlib  # noqa: F401
import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
KERNEL = "lit-matching-test"
# Figures each notebook draws at least (rendered by the kernel's inline backend).
MIN_FIGURES = {
    "01_quickstart.ipynb": 2,
    "02_training_modes.ipynb": 6,
    "03_scaling_out.ipynb": 1,
    "04_serving.ipynb": 0,  # no figure: it talks to a server
}


def _kernel_manager(tmp_path: Path) -> AsyncKernelManager:
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lit_matching test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def _stream_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


def test_the_notebooks_are_the_ones_expected():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == sorted(MIN_FIGURES)


@pytest.mark.parametrize("name", sorted(MIN_FIGURES))
def test_notebook_is_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "LIT_MATCHING_NOTEBOOK_SMALL" in code[0].source


@pytest.mark.parametrize("name", sorted(MIN_FIGURES))
def test_notebook_runs_with_small_settings(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_MATCHING_NOTEBOOK_SMALL", "1")
    # One thread per process: on a busy 2-core machine OpenMP's spinning threads make the
    # notebooks' tiny batches tens of times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' own temporary folders
    monkeypatch.setenv("WANDB_MODE", "offline")  # never reach the network
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    client = nbclient.NotebookClient(
        notebook,
        km=_kernel_manager(tmp_path),
        timeout=600,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError (with the traceback) on any cell error

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "small settings: True" in _stream_text(code[0])
    assert _stream_text(code[-1]).strip() == sys.executable
    figures = sum(
        "image/png" in out.get("data", {})
        for cell in code
        for out in cell.outputs
        if out.output_type == "display_data"
    )
    assert figures >= MIN_FIGURES[name]
