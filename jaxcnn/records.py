"""The records a run leaves to be read back: `metrics.jsonl`, `summary.json` and `kernels.npz`.

`jaxcnn.run` writes them; `jaxcnn report` reads them, and a resumed run extends `kernels.npz`. These
readers check what their readers rely on (JSON objects, epochs counting up, finite numbers, an error
rate in [0, 1], arrays of the right rank, dtype and length) and turn anything else into one
`DamagedFile` naming the file and what is wrong with it.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from .fileio import DamagedFile, load_npz, reading

KERNELS_LAYOUT = "jaxcnn (epochs, kh, kw, C_in, C_out)"
_KERNEL_NAME = re.compile(r"^conv\d+$")


def _non_finite(value, where: str) -> str | None:
    """The first non-finite number inside a parsed JSON value, as 'where: value', or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} = {value}"
    if isinstance(value, dict):
        return next(filter(None, (_non_finite(v, f"{where}.{k}" if where else str(k)) for k, v in value.items())), None)
    if isinstance(value, list):
        return next(filter(None, (_non_finite(v, f"{where}[{i}]") for i, v in enumerate(value))), None)
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_error_rate(path, where: str, record: dict) -> None:
    if "test_error" in record:
        value = record["test_error"]
        if not _is_number(value) or not 0 <= value <= 1:
            raise DamagedFile(path, f"{where}test_error is {value!r}, not an error rate in [0, 1]")


def read_metrics(path) -> list[dict]:
    """The per-epoch records of metrics.jsonl, one JSON object a line, epochs 1, 2, ... in order."""
    with reading(path, "metrics.jsonl record"):
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        records = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DamagedFile(path, f"line {n} is not JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise DamagedFile(path, f"line {n} is not a JSON object")
            bad = _non_finite(record, "")
            if bad:
                raise DamagedFile(path, f"line {n}: non-finite number {bad}")
            epoch = record.get("epoch")
            if type(epoch) is not int or epoch != len(records) + 1:
                raise DamagedFile(path, f"line {n}: epoch is {epoch!r}, expected {len(records) + 1}")
            _check_error_rate(path, f"line {n}: ", record)
            rms = record.get("delta_rms")
            if rms is not None and (not isinstance(rms, dict) or not all(_is_number(v) and v >= 0 for v in rms.values())):
                raise DamagedFile(path, f"line {n}: delta_rms is not a table of RMS values")
            if rms and records and records[0].get("delta_rms") and set(rms) != set(records[0]["delta_rms"]):
                raise DamagedFile(path, f"line {n}: delta_rms has layers {sorted(rms)}, line 1 has "
                                        f"{sorted(records[0]['delta_rms'])}")
            records.append(record)
    return records


def read_summary(path) -> dict:
    """summary.json: one JSON object with finite numbers, a test error in [0, 1] and steps_per_epoch >= 1."""
    with reading(path, "summary.json record"):
        try:
            summary = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DamagedFile(path, f"not JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
        if not isinstance(summary, dict):
            raise DamagedFile(path, "not a JSON object")
        bad = _non_finite(summary, "")
        if bad:
            raise DamagedFile(path, f"non-finite number {bad}")
        _check_error_rate(path, "", summary)
        steps = summary.get("steps_per_epoch")
        if steps is not None and (type(steps) is not int or steps < 1):
            raise DamagedFile(path, f"steps_per_epoch is {steps!r}, not a positive integer")
    return summary


def read_kernels(path) -> tuple[dict[str, np.ndarray], list[int]]:
    """kernels.npz as ({"conv1": (epochs, kh, kw, C_in, C_out) float64, ...}, [epoch, ...]): the kernels after
    each recorded epoch (1-based, increasing), every array as long as the list of epochs and finite."""
    what = "jaxcnn kernels record"
    arrays, meta = load_npz(path, what)
    with reading(path, what):
        epochs = meta.get("epochs")
        if (not isinstance(epochs, list) or not epochs or not all(type(e) is int and e >= 1 for e in epochs)
                or any(a >= b for a, b in zip(epochs, epochs[1:]))):
            raise DamagedFile(path, f"epochs {epochs!r} is not an increasing list of epoch numbers")
        if not arrays:
            raise DamagedFile(path, "holds no kernels")
        for name, k in arrays.items():
            if not _KERNEL_NAME.match(name):
                raise DamagedFile(path, f"unexpected entry {name!r} (expected conv1, conv2, ...)")
            if k.dtype != np.float64 or k.ndim != 5 or k.shape[0] != len(epochs) or 0 in k.shape:
                raise DamagedFile(path, f"{name} is {k.dtype}{list(k.shape)}, expected float64 "
                                        f"[{len(epochs)} epochs, kh, kw, C_in, C_out]")
            bad = int(k.size - np.count_nonzero(np.isfinite(k)))
            if bad:
                raise DamagedFile(path, f"{name} holds {bad} non-finite value(s) (NaN or Inf)")
    return arrays, epochs
