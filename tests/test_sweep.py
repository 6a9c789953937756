"""Sweeps: every member equals its solo run; 2 devices and 2 processes give what 1 gives."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import config, netfile, run, sweep

REPO = Path(__file__).resolve().parent.parent
SWEEP = """
[train]
batchsize = 25
numepochs = 2
dtype = "float64"

[data]
dataset = "fashion_mnist"
n_train = 300
n_test = 600

[sweep.train]
seed = [0, 1, 2]
alpha = [1.0, 0.5]
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "s.toml").write_text(SWEEP)
    rows = sweep.train(folder / "s.toml", folder / "out", log=lambda *_: None)
    return folder, rows


def _nets(out):
    return {p.name: netfile.net_arrays(netfile.load(p)) for p in sorted((out / "nets").glob("member-*.npz"))}


@pytest.mark.slow
def test_members_equal_solo_runs_in_float64(swept, tmp_path):
    folder, rows = swept
    _, values, configs = sweep.load(folder / "s.toml")
    assert len(rows) == 6 and [r["train.seed"] for r in rows] == [0, 0, 1, 1, 2, 2]
    for i in (0, 3, 5):
        summary = run.train(configs[i], tmp_path / f"solo{i}", progress=False, log=lambda *_: None)
        solo = netfile.net_arrays(netfile.load(tmp_path / f"solo{i}" / "net.npz"))
        member = _nets(folder / "out")[f"member-{i:03d}.npz"]
        for key in solo:
            assert solo[key].dtype == np.float64
            np.testing.assert_allclose(member[key], solo[key], rtol=1e-12, atol=1e-14)
        assert rows[i]["test_error"] == summary["test_error"]


@pytest.mark.slow
def test_sweep_records(swept):
    folder, rows = swept
    out = folder / "out"
    with open(out / "members.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["member"]) for r in table] == list(range(6))
    assert {float(r["train.alpha"]) for r in table} == {1.0, 0.5}
    assert all(0 <= float(r["test_error"]) <= 1 and r["group_size"] == "6" for r in table)
    lines = [json.loads(line) for line in (out / "members.jsonl").read_text().splitlines()]
    assert [len(line["metrics"]) for line in lines] == [2] * 6
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "jaxcnn", "sweep", *map(str, args)], cwd=REPO,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _same(a, b):
    assert a.keys() == b.keys() and a
    for name in a:
        for key in a[name]:
            np.testing.assert_allclose(a[name][key], b[name][key], rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_two_devices_give_what_one_gives(swept):
    folder, _ = swept
    proc = _cli(folder / "s.toml", "--out", folder / "two_devices",
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    _same(_nets(folder / "two_devices"), _nets(folder / "out"))


@pytest.mark.slow
def test_vmap_batching_gives_what_side_by_side_gives(swept):
    folder, _ = swept
    sweep.train(folder / "s.toml", folder / "vmapped", log=lambda *_: None, batching="vmap")
    _same(_nets(folder / "vmapped"), _nets(folder / "out"))


@pytest.mark.slow
def test_two_processes_give_what_one_gives(swept):
    """Two processes under `--coordinator`, each member on its process's device; 600 test images are two
    chunks, which a single process would share out over its devices (`jaxcnn.parallel`), but not across
    processes."""
    folder, _ = swept
    address = f"127.0.0.1:{_free_port()}"
    procs = [_cli(folder / "s.toml", "--out", folder / "two_processes", "--coordinator", address,
                  "--num-processes", 2, "--process-id", i) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    _same(_nets(folder / "two_processes"), _nets(folder / "out"))


TINY = """
[train]
batchsize = 20
numepochs = 2
dtype = "float64"
optimizer = "{optimizer}"

[model]
layers = [{{type = "i"}}, {{type = "c", outputmaps = 2, kernelsize = 5}}, {{type = "s", scale = 4}}]

[data]
dataset = "fashion_mnist"
n_train = 100
n_test = 60

[sweep.train]
{axes}
"""


def _members_equal_solo_runs(tmp_path, optimizer, axes, expect_groups):
    """Sweep `axes`, then train every member alone with `jaxcnn train`'s code: the nets must be equal."""
    (tmp_path / "s.toml").write_text(TINY.format(optimizer=optimizer, axes=axes))
    rows = sweep.train(tmp_path / "s.toml", tmp_path / "out", log=lambda *_: None)
    _, values, configs = sweep.load(tmp_path / "s.toml")
    assert len(rows) == len(configs)
    assert sum(1 / r["group_size"] for r in rows) == pytest.approx(expect_groups)
    members = _nets(tmp_path / "out")
    for i, cfg in enumerate(configs):
        for key, value in values[i].items():                    # the record says what ran
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == value == rows[i][key]
        summary = run.train(cfg, tmp_path / f"solo{i}", progress=False, log=lambda *_: None)
        solo = netfile.net_arrays(netfile.load(tmp_path / f"solo{i}" / "net.npz"))
        member = members[f"member-{i:03d}.npz"]
        assert member.keys() == solo.keys()
        for key in solo:
            assert solo[key].dtype == member[key].dtype == np.float64
            np.testing.assert_allclose(member[key], solo[key], rtol=1e-12, atol=1e-14, err_msg=f"member {i} {key}")
        assert rows[i]["test_error"] == summary["test_error"]
    return rows, configs


@pytest.mark.slow
def test_a_scheduled_sweep_trains_each_member_with_its_own_alpha_and_momentum(tmp_path):
    """Once, every member of a scheduled sweep trained with member 0's alpha, and sgd with momentum
    [0, 0.9] failed with a tree-structure error."""
    rows, configs = _members_equal_solo_runs(tmp_path, "sgd", 'schedule = ["cosine"]\nalpha = [0.25, 3.0]\n'
                                                               'momentum = [0.0, 0.9]', expect_groups=1)
    assert {(c.train.alpha, c.train.momentum) for c in configs} == {(0.25, 0.0), (0.25, 0.9), (3.0, 0.0), (3.0, 0.9)}
    errors = {(r["train.alpha"], r["train.momentum"]): r["test_error"] for r in rows}
    assert len(set(errors.values())) > 1                   # the members really differ


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, axes, groups", [
    ("sgd", "alpha = [3.0]\nmomentum = [0.0, 0.5]\nbatchsize = [20, 25]", 6),
    ("momentum", "alpha = [0.5, 3.0]\nmomentum = [0.5, 0.9]", 3),
    ("adam", "alpha = [0.003, 0.05]\nseed = [0, 1]", 3),
])
def test_every_member_equals_its_solo_run_for_every_optimizer_and_schedule(tmp_path, optimizer, axes, groups):
    _members_equal_solo_runs(tmp_path, optimizer, 'schedule = ["constant", "cosine", "exponential"]\n' + axes, groups)


def test_momentum_settings_that_would_not_do_what_they_say_are_refused(tmp_path):
    for optimizer, momentum, message in [("momentum", 0.0, "optimizer 'momentum' needs a momentum > 0"),
                                         ("adam", 0.9, "not used by optimizer 'adam'"),
                                         ("sgd", 1.0, r"must be in \[0, 1\)")]:
        (tmp_path / "m.toml").write_text(f'[train]\noptimizer = "{optimizer}"\nmomentum = {momentum}\n'
                                         f'[sweep.train]\nseed = [0, 1]\n')
        with pytest.raises(config.ConfigError, match=f"train.momentum: .*{message}"):
            sweep.load(tmp_path / "m.toml")


def test_groups_and_refusals(tmp_path):
    base, values, configs = sweep.load(REPO / "configs" / "sweep_alpha.toml")
    keys = [sweep.program_key(c, (28, 28, 1), 10, 60000) for c in configs]
    assert len(configs) == 8 and len(set(keys)) == 2                         # one group per batch size
    assert {c.train.batchsize for c in configs} == {25, 100}
    assert len(sweep.load(REPO / "configs" / "sweep_seeds.toml")[2]) == 8
    (tmp_path / "d.toml").write_text("[sweep.data]\nn_train = [10, 20]\n")
    with pytest.raises(config.ConfigError, match="the data cannot be swept"):
        sweep.load(tmp_path / "d.toml")
    (tmp_path / "n.toml").write_text("[train]\nalpha = 1.0\n")
    with pytest.raises(config.ConfigError, match=r"needs a \[sweep.<section>\] table"):
        sweep.load(tmp_path / "n.toml")
    (tmp_path / "k.toml").write_text("[sweep.train]\nalpah = [1.0]\n")
    with pytest.raises(config.ConfigError, match="unknown config key: train.alpah"):
        sweep.load(tmp_path / "k.toml")


def test_cpu_devices_spread_members_evenly_over_the_cores():
    assert sweep.cpu_devices_for(8, 2) == 2
    assert sweep.cpu_devices_for(8, 16) == 8           # no device without a member
    assert sweep.cpu_devices_for(6, 4) == 3            # none padded: 4 devices would train 2 copies for nothing
    assert sweep.cpu_devices_for(7, 2) == 1
    assert sweep.cpu_devices_for(1, 2) == 1
    assert sweep.cpu_devices_for(3, 1) == 1


@pytest.mark.slow
def test_the_sweep_command_spreads_members_over_cpu_devices(swept):
    """Run as a command, the sweep puts its members on separate CPU devices (`--cpu-devices`; by default as
    many as cores divide them evenly) and trains each exactly as one device does; 0 devices is refused."""
    folder, _ = swept
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    run_ = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "jaxcnn", "sweep", str(folder / "s.toml"), *extra], cwd=REPO, timeout=600,
        env={**env, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1"}, capture_output=True, text=True)
    done = run_("--out", str(folder / "three_devices"), "--cpu-devices", "3")
    assert done.returncode == 0, done.stderr
    assert "6 nets in 1 compiled group(s) on 3 device(s)" in done.stdout
    _same(_nets(folder / "three_devices"), _nets(folder / "out"))
    refused = run_("--out", str(folder / "none"), "--cpu-devices", "0")
    assert refused.returncode == 2 and refused.stderr.strip() == "jaxcnn: error: --cpu-devices 0: must be at least 1"
    assert not (folder / "none").exists()
