"""The tutorials, as MyST markdown notebooks (jupytext) that install with jaxcnn (`jaxcnn.tutorials`).

The `.md` files beside this one are the sources, text-first so that they diff and review like code;
jupytext turns each into an `.ipynb` when asked (`notebook`, `write`, `jaxcnn tutorials DIR`), so a
notebook can never drift from its source. Converting needs the `tutorials` extra
(`pip install 'jaxcnn[tutorials]'`: jupytext, nbclient, ipykernel).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


class TutorialsError(ValueError):
    """A folder the notebooks cannot go to, or the tutorials extra missing."""


def names() -> list[str]:
    """The tutorials in reading order (their file names without `.md`)."""
    return sorted(entry.name[:-3] for entry in resources.files(__name__).iterdir() if entry.name.endswith(".md"))


def source(name: str) -> str:
    """One tutorial's MyST markdown."""
    if name not in names():
        raise TutorialsError(f"no tutorial {name!r}; the tutorials are {', '.join(names())}")
    return resources.files(__name__).joinpath(f"{name}.md").read_text(encoding="utf-8")


def _converters():
    """(jupytext, nbformat), or an error naming the extra that brings them."""
    try:
        import jupytext
        import nbformat
    except ImportError as err:
        raise TutorialsError(f"the tutorials need {err.name}: pip install 'jaxcnn[tutorials]'") from None
    return jupytext, nbformat


def notebook(name: str):
    """One tutorial as an nbformat v4 notebook without outputs, validated."""
    jupytext, nbformat = _converters()
    nb = jupytext.reads(source(name), fmt="md:myst")
    nbformat.validate(nb)
    return nb


def write(folder, overwrite: bool = False) -> list[Path]:
    """Write every tutorial as `folder/<name>.ipynb`; returns the paths.

    Notebooks already there are kept (an error names the first) unless `overwrite`; every notebook is
    converted before anything is written, and each is written atomically."""
    from jaxcnn.fileio import atomic_write_text

    _, nbformat = _converters()

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise TutorialsError(f"{folder} exists and is not a folder")
    targets = {name: folder / f"{name}.ipynb" for name in names()}
    existing = [path for path in targets.values() if path.exists()]
    if existing and not overwrite:
        raise TutorialsError(f"{existing[0]} already exists (--overwrite replaces the tutorials' notebooks)")
    notebooks = {name: notebook(name) for name in targets}
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in targets.items():
        atomic_write_text(path, nbformat.writes(notebooks[name]))
    return list(targets.values())
