"""The tutorials (docs/tutorials/*.md, installed as jaxcnn.tutorials): `jaxcnn tutorials DIR` writes them
as valid notebooks, and each notebook it writes runs top to bottom in a fresh kernel, its own asserts
included, with its figures drawn. No output is compared: the notebooks assert what they claim."""
import os
import re

import nbformat
import pytest

from jaxcnn import cli, tutorials

TUTORIALS = ["01_the_lectures_net", "02_backprop_by_hand", "03_check_your_own_cnnbp", "04_beyond_the_toolbox"]
CELL_TIMEOUT = 300          # seconds for one cell on a slow CI machine; a tutorial takes about a minute in all


@pytest.fixture(autouse=True)
def jupyter_paths(monkeypatch):
    """Jupyter's platform-standard paths (its DeprecationWarning about them would be an error here)."""
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The notebooks as a teacher gets them: written by `jaxcnn tutorials DIR`."""
    folder = tmp_path_factory.mktemp("tutorials") / "notebooks"
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    assert cli.main(["tutorials", str(folder)]) == 0
    return folder


def test_the_tutorials_are_packaged_in_order():
    assert tutorials.names() == TUTORIALS
    for name in TUTORIALS:
        text = tutorials.source(name)
        assert text.startswith("---\njupytext:") and "format_name: myst" in text and "name: python3" in text
        assert re.search(r"^# \d\. ", text, re.M)


@pytest.mark.parametrize("name", TUTORIALS)
def test_each_tutorial_asserts_what_it_claims(name):
    """Every tutorial checks itself: most of its code cells assert something (an `assert` on the result,
    not a stored output)."""
    code = [cell.source for cell in tutorials.notebook(name).cells if cell.cell_type == "code"]
    asserting = [source for source in code if re.search(r"^\s*assert ", source, re.M)]
    assert len(code) >= 6 and len(asserting) >= len(code) - 2, (len(asserting), len(code))


def test_jaxcnn_tutorials_writes_valid_notebooks(written, capsys):
    paths = sorted(written.glob("*.ipynb"))
    assert [path.stem for path in paths] == TUTORIALS
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        source = tutorials.notebook(path.stem)
        assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in source.cells]
        assert nb.metadata.kernelspec.name == "python3"
        assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


def test_jaxcnn_tutorials_keeps_what_is_there(tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    mine = folder / f"{TUTORIALS[1]}.ipynb"
    mine.write_text("my edited notebook")
    assert cli.main(["tutorials", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxcnn: error: ") and f"{mine} already exists" in err and "--overwrite" in err
    assert mine.read_text() == "my edited notebook" and sorted(p.name for p in folder.iterdir()) == [mine.name]
    assert cli.main(["tutorials", str(folder), "--overwrite"]) == 0
    nbformat.validate(nbformat.read(mine, as_version=4))
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli.main(["tutorials", str(afile)]) == 2
    assert "is not a folder" in capsys.readouterr().err and afile.read_text() == "x"


def test_missing_jupytext_says_which_extra(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_jupytext(name, *args, **kwargs):
        if name == "jupytext":
            raise ImportError("No module named 'jupytext'", name="jupytext")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jupytext)
    assert cli.main(["tutorials", str(tmp_path / "out")]) == 2
    assert "jaxcnn: error: the tutorials need jupytext: pip install 'jaxcnn[tutorials]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", TUTORIALS)
def test_a_written_notebook_runs_top_to_bottom(written, name, tmp_path):
    """Executed in a fresh kernel (nbclient) from the folder `jaxcnn tutorials` wrote; any error, a failed
    assert in a cell included, or a cell over CELL_TIMEOUT fails the test. Every cell that draws a figure
    has a PNG among its outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(written / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    drawing = [cell for cell in code if "plt.show()" in cell.source]
    assert drawing or name in ("02_backprop_by_hand", "03_check_your_own_cnnbp")
    for cell in drawing:
        assert any("image/png" in out.get("data", {}) for out in cell.outputs), cell.source[:80]
    printed = "".join(out.get("text", "") for cell in code for out in cell.outputs if out.output_type == "stream")
    assert re.search(r"notebook ran in \d+\.\d s", printed)
