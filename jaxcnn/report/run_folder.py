"""A finished run folder, read once: its config, net, metrics, data, and the records training left for the report."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import numpy as np

from .. import config as config_mod, data as data_mod, fileio, netfile


class ReportError(ValueError):
    """The run folder cannot be reported on (missing files, image index out of range)."""


@dataclasses.dataclass
class Run:
    path: Path
    cfg: object                 # config.Config
    config_text: str            # config.toml as written
    net: object                 # the trained jaxcnn Net (as saved)
    metrics: list               # metrics.jsonl, one dict per epoch
    summary: dict               # summary.json ({} when missing)
    dataset: object             # data.Dataset the run was trained on
    names: list                 # class names

    def test_image(self, index: int) -> tuple[np.ndarray, int]:
        """Test image `index` as natural (H, W, C) float64 in [0, 1], and its label."""
        n_test = len(self.dataset.test_labels)
        if not 0 <= index < n_test:
            raise ReportError(f"--image {index}: the run's test set has images 0..{n_test - 1}")
        image = data_mod.to_float(with_channels(self.dataset.test_images[index:index + 1]), np.float64)[0]
        return image, int(self.dataset.test_labels[index])


def with_channels(images):
    """(N, H, W) images -> (N, H, W, 1); (N, H, W, C) unchanged."""
    return images if images.ndim == 4 else images[..., None]


def load_run(run_dir) -> Run:
    """A finished run folder (config.toml and net.npz at least) with the data it was trained on."""
    from ..run import load_data

    run_dir = Path(run_dir)
    for name in ("config.toml", "net.npz"):
        if not (run_dir / name).exists():
            raise ReportError(f"{run_dir} is not a finished run: no {name}")
    config_text = (run_dir / "config.toml").read_text()
    cfg = config_mod.from_dict(tomllib.loads(config_text))
    metrics_path = run_dir / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] \
        if metrics_path.exists() else []
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    net = netfile.load(run_dir / "net.npz")
    dataset = load_data(cfg)
    names = data_mod.CLASS_NAMES.get(dataset.name, [str(c) for c in range(dataset.n_classes)])
    return Run(run_dir, cfg, config_text, net, metrics, summary, dataset, names)


def read_rl(run_dir: Path):
    """rL per step, from the newest checkpoint that loads (the run keeps its whole rL history there)."""
    from .. import checkpoint

    for path in reversed(checkpoint.list_checkpoints(run_dir)):
        try:
            arrays, _ = fileio.load_npz(path)
            return np.asarray(arrays["rl"])
        except (OSError, ValueError, KeyError):
            continue
    return None


def read_kernels(run_dir: Path):
    """kernels.npz: ({conv layer name: (epochs, kh, kw, C_in, C_out) jaxcnn-layout kernels}, [epoch numbers]),
    or None when the run did not record them."""
    path = run_dir / "kernels.npz"
    if not path.exists():
        return None
    arrays, meta = fileio.load_npz(path)
    return arrays, meta["epochs"]


def data_files(dataset) -> list[Path]:
    """The files the run's data came from: the four IDX files of its folder, or its .mat file."""
    source = Path(dataset.source)
    if source.is_file():
        return [source]
    if source.is_dir():
        return data_mod.idx_paths(source)
    return []
