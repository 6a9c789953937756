"""`jaxcnn bench`: the baseline and the torch peer compute the same maths as jaxcnn, the contenders take
turns epoch by epoch, and the record's ratios are the ratios of its medians (no timed assertions)."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import bench, cli, peers
from jaxcnn.data import one_hot, to_float
from jaxcnn.layers import EXAMPLE_LAYERS, Conv, Input, Pool
from jaxcnn.model import loss
from jaxcnn.net import init_net
from jaxcnn.train import batch_matrix, train_epoch

REPO = Path(__file__).resolve().parent.parent


def assert_trees_close(actual, expected, rtol):
    """Same tree structure, then every leaf within rtol of the largest entry of its expected leaf."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    leaves = jax.tree.leaves(expected)
    assert leaves
    for a, e in zip(jax.tree.leaves(actual), leaves, strict=True):
        e = np.asarray(e)
        np.testing.assert_allclose(np.asarray(a), e, rtol=rtol, atol=rtol * np.abs(e).max())


@pytest.mark.parametrize("layers, image_shape, output", [
    (EXAMPLE_LAYERS, (28, 28, 1), "sigmoid"),
    pytest.param((Input(), Conv(3, 3), Pool(2), Conv(2, 2)), (10, 14, 2), "sigmoid", marks=pytest.mark.slow),
    ((Input(), Conv(3, 3, "relu"), Pool(2, "max"), Conv(2, 3, "tanh"), Pool(2)), (14, 18, 2), "softmax")])
def test_baseline_loss_and_gradient_are_the_model_s(layers, image_shape, output, rng):
    """The benchmark's denominator computes `model.loss` and its gradient, also with non-square multi-channel maps
    (where an NHWC flatten or a kernel transposed the wrong way would show) and with every layer option."""
    net = init_net(jax.random.key(3), layers, image_shape, 10, jnp.float64, output=output)
    net = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape), net)     # non-zero biases too
    x = jnp.asarray(rng.uniform(size=(7, *image_shape)))
    y = jnp.asarray(one_hot(rng.integers(0, 10, 7), 10, np.float64))
    value, grads = jax.value_and_grad(bench.baseline_loss)(net, x, y)
    expected_value, expected_grads = jax.value_and_grad(loss)(net, x, y)
    assert value.dtype == jnp.float64 and value > 0
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    assert_trees_close(grads, expected_grads, 1e-12)


def test_contenders_take_turns_on_the_same_batches():
    """A B C A B C ..., each epoch timed on its own, round r on batches_of(r), after a settling pause that is
    neither timed nor in its host shares."""
    calls = []
    host = {"now": 0.0, "stolen": 0.0, "busy": 0.0, "total": 0.0, "own": 0.0}     # a fake 2-core machine

    def sleep(seconds):                                     # idle cores: only the total grows
        host["now"] += seconds
        host["total"] += 2 * seconds

    def run_for(seconds):                                   # both cores busy, 3/4 of it this process's, 5% stolen
        host["now"] += seconds
        host["total"] += 2 * seconds
        host["stolen"] += 0.1 * seconds
        host["busy"] += 1.9 * seconds
        host["own"] += 1.5 * seconds

    epochs = {name: (lambda b, name=name, d=d: (calls.append((name, b)), run_for(d)))
              for name, d in (("jaxcnn", 1.0), ("baseline", 4.0), ("torch", 2.0))}
    seconds, shares = bench.interleave(epochs, lambda r: f"order {r}", 2, clock=lambda: host["now"],
                                       sample=lambda: (host["stolen"], host["busy"], host["total"], host["own"]),
                                       sleep=sleep)
    assert calls == [("jaxcnn", "order 0"), ("baseline", "order 0"), ("torch", "order 0"),
                     ("jaxcnn", "order 1"), ("baseline", "order 1"), ("torch", "order 1")]
    assert seconds == {"jaxcnn": [1.0, 1.0], "baseline": [4.0, 4.0], "torch": [2.0, 2.0]}
    assert host["now"] == 14.0 + 6 * bench.SETTLE_SECONDS and bench.SETTLE_SECONDS >= 0.2    # a pause before each
    for name in epochs:
        for share in shares[name]:
            assert share == pytest.approx({"stolen": 0.05, "others": 0.2}, rel=1e-12)


def test_host_shares_read_proc_stat_and_leave_out_this_process(tmp_path):
    """/proc/stat's cpu line in clock ticks: user nice system idle iowait irq softirq steal guest guest_nice.
    Busy is all but idle, iowait and steal (guest time is inside user); this process's CPU time is not others'."""
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  {3 * tick} 0 {tick} {10 * tick} {tick} 0 0 {tick} {2 * tick} 0\ncpu0 1 2 3\n")
    stolen, busy, total, own = bench.host_sample(stat)
    times = os.times()
    assert (stolen, busy, total) == (1.0, 4.0, 16.0) and 0 < own <= times.user + times.system      # seconds
    assert bench.host_shares((1.0, 4.0, 16.0, 2.0), (1.0, 4.0, 16.0, 2.0)) is None                 # no tick between
    assert bench.host_shares((1.0, 4.0, 16.0, 2.0), (3.0, 14.0, 36.0, 5.0)) == {"stolen": 0.1, "others": 0.35}
    assert bench.host_shares((0.0, 0.0, 10.0, 0.0), (0.0, 1.0, 20.0, 3.0)) == {"stolen": 0.0, "others": 0.0}
    stat.write_text("intr 1 2 3\n")
    assert bench.host_sample(stat) is None and bench.host_sample(tmp_path / "absent") is None
    assert bench.host_shares(None, (0.0, 0.0, 1.0, 0.0)) is None


def test_ratios_are_medians_over_jaxcnn():
    assert bench.ratios({"jaxcnn": 2.0, "baseline": 15.0, "torch": 5.0}) == {"baseline/jaxcnn": 7.5, "torch/jaxcnn": 2.5}
    assert bench.ratios({"jaxcnn": 2.0}) == {}


def test_round_ratios_pair_each_epoch_with_jaxcnn_s_of_the_same_round():
    """A host that slows down between rounds moves both epochs of a round: the per-round ratio stays put
    where the ratio of the medians does not."""
    seconds = {"jaxcnn": [1.0, 2.0, 4.0], "torch": [2.5, 5.0, 10.0], "baseline": [3.0, 4.0, 20.0]}
    rr = bench.round_ratios(seconds)
    assert rr["torch/jaxcnn"] == {"per_round": [2.5, 2.5, 2.5], "median": 2.5, "min": 2.5, "max": 2.5}
    assert rr["baseline/jaxcnn"] == {"per_round": [3.0, 2.0, 5.0], "median": 3.0, "min": 2.0, "max": 5.0}
    assert bench.ratios({"jaxcnn": 2.0, "baseline": 4.0}) == {"baseline/jaxcnn": 2.0}     # median 4 over median 2
    assert bench.round_ratios({"jaxcnn": [1.0]}) == {}
    with pytest.raises(ValueError):
        bench.round_ratios({"jaxcnn": [1.0, 2.0], "torch": [1.0]})


TORCH_COMPILE_IMPORT = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=[pytest.mark.slow, TORCH_COMPILE_IMPORT])],
                         ids=["torch", "torch-compile"])
def test_torch_peer_is_the_same_maths(fashion, compile):
    """One epoch of 3 steps on 60 Fashion-MNIST images in float64: torch's per-step losses and final weights
    are jaxcnn's `train_epoch`, from the same initial weights and the same permutation; eager and through
    torch.compile alike (the compiled peer takes 30-90 s to compile on 2 cores: full tier only)."""
    torch = pytest.importorskip("torch")
    x = to_float(fashion.train_images[:60, :, :, None], np.float64)
    y = one_hot(fashion.train_labels[:60], 10, np.float64)
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, jnp.float64)
    order = np.random.default_rng(5).permutation(60)

    module, epoch = peers.torch_trainer(net, x, y, alpha=1.0, compile=compile)
    assert module[0].weight.dtype == torch.float64
    assert_trees_close(peers.jax_params(module), net.params, 0)                 # it starts from jaxcnn's weights
    losses = epoch(batch_matrix(order, 20))
    trained, expected_losses = train_epoch(net, x, y, order, alpha=1.0, batchsize=20)

    assert losses.shape == (3,) and np.all(np.diff(losses) != 0)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-10)
    assert_trees_close(peers.jax_params(module), jax.tree.map(np.asarray, trained.params), 1e-10)
    moved = np.abs(peers.jax_params(module)["ffW"] - np.asarray(net.params["ffW"])).max()
    assert moved > 1e-3                                                         # the weights did train


def test_flops_per_image_are_counted_from_the_layer_stack():
    """The toolbox net, by hand: conv1 24·24·6 outputs × 25 taps = 86,400 multiply-adds, conv2 8·8·12 × 25·6 =
    115,200, the output layer 10 × 192 = 1,920. Forward 2·203,520; backward: both kernel gradients (86,400 +
    115,200), conv2's delta back to the first pooled maps (115,200; conv1 sends none), ffW's gradient and the
    fv delta (2·1,920): 2·320,640. An epoch of 60,000 images is 62.8992 GFLOP."""
    per_image = bench.flops_per_image(EXAMPLE_LAYERS, (28, 28), 10)
    assert per_image == {"forward": 407_040, "backward": 641_280}
    assert sum(per_image.values()) * 60_000 == 62_899_200_000
    # c-c on RGB 9×12: conv1 7·10·2 × 9·3 = 3,780; conv2 6·9·3 × 4·2 = 1,296, and it sends a delta back; output 4 × 162 = 648
    assert bench.flops_per_image((Input(), Conv(2, 3), Conv(3, 2)), (9, 12, 3), 4) == {
        "forward": 2 * (3780 + 1296 + 648), "backward": 2 * (3780 + 2 * 1296 + 2 * 648)}
    # pooling first: the conv after it sends no delta back (nothing before it learns); 5·5·3 × 9·1 = 675, output 2 × 75
    assert bench.flops_per_image((Input(), Pool(2), Conv(3, 3)), (14, 14), 2) == {
        "forward": 2 * (675 + 150), "backward": 2 * (675 + 2 * 150)}


def test_cpu_info_names_the_model_and_its_vector_extensions():
    cpuinfo = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
               "model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 2\ncache size\t: 4096 KB\n"
               "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512bw avx_vnni amx_tile\n\n"
               "processor\t: 1\nmodel name\t: another\nflags\t\t: fpu sse\n")
    assert bench.cpu_info(cpuinfo) == {"processor": "Intel(R) Xeon(R) Processor", "family_model_stepping": ["6", "207", "2"],
                                       "vector_extensions": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                                             "avx_vnni", "amx_tile"],
                                       "cache_size": "4096 KB"}


def test_a_peer_named_twice_is_one_line(capsys):
    assert cli.main(["bench", "--peer", "torch", "--peer", "torch", "--json"]) == 2
    err = capsys.readouterr().err
    assert err == "jaxcnn: error: --peer: name each peer once, got torch, torch\n"


def test_torch_peer_without_torch_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)                             # `import torch` raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'jaxcnn\[peers\]'"):
        peers.import_torch()
    assert cli.main(["bench", "--peer", "torch", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxcnn: error: --peer torch needs PyTorch") and err.count("\n") == 1


def test_bench_is_only_reached_through_the_cli():
    assert "__main__" not in (REPO / "jaxcnn" / "bench.py").read_text()


def _bench_json(tmp_path, *args):
    config = tmp_path / "tiny.toml"
    config.write_text('[train]\nbatchsize = 50\n\n[data]\ndataset = "fashion_mnist"\nn_train = 200\nn_test = 100\n')
    result = subprocess.run([sys.executable, "-m", "jaxcnn", "bench", str(config), "--epochs", "1", "--json", *args],
                            capture_output=True, text=True, cwd=REPO, timeout=600,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", "JAXCNN_MIRRORS": "http://127.0.0.1:9/"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_bench_json_record(tmp_path):
    """The real command on a tiny config: one object whose lists have one entry per timed round and whose
    ratio is the ratio of the medians."""
    r = _bench_json(tmp_path)
    assert (r["n_train"], r["n_test"], r["batchsize"], r["steps_per_epoch"]) == (200, 100, 50, 4)
    assert r["dataset"] == "fashion_mnist" and r["dtype"] == "float32" and r["rounds"] == 1
    assert r["contenders"] == ["jaxcnn", "baseline"]
    for name in r["contenders"]:
        assert len(r["epoch_seconds"][name]) == 1 and r["compile_seconds"][name] > 0 and r["warmup_seconds"][name] > 0
        assert r["seconds_per_epoch"][name] == statistics.median(r["epoch_seconds"][name])
        assert r["images_per_second"][name] == pytest.approx(200 / r["seconds_per_epoch"][name], rel=1e-12)
    assert r["ratios"] == {"baseline/jaxcnn": r["seconds_per_epoch"]["baseline"] / r["seconds_per_epoch"]["jaxcnn"]}
    assert r["round_ratios"]["baseline/jaxcnn"]["per_round"] == [
        b / j for b, j in zip(r["epoch_seconds"]["baseline"], r["epoch_seconds"]["jaxcnn"])]
    assert r["compiler_options"] == {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_prefer_vector_width": "512"}
    assert r["phase_patches"] == "native (jaxcnn/phase_patches.cc)"              # the record names what made them
    assert r["peak_memory_mb"] > 0 and r["cpu_count"] == os.cpu_count()
    assert len(r["eval_seconds_per_round"]) == 1 and r["eval_seconds"] == r["eval_seconds_per_round"][0] > 0
    assert set(r["host_shares"]) == {"jaxcnn", "baseline", "sgemm", "evaluate"}
    assert (r["settle_seconds"], r["eval_reps"]) == (bench.SETTLE_SECONDS, bench.EVAL_REPS)
    sgemm_share, = r["host_shares"]["sgemm"]             # 32 products take far more than a clock tick
    assert sgemm_share is not None
    for shares in r["host_shares"].values():             # a 4-step epoch may fall between two ticks: None
        assert len(shares) == 1 and (shares[0] is None or all(0 <= shares[0][k] <= 1 for k in ("stolen", "others")))
    table = bench.format_table(r)
    assert f"(median of {r['eval_seconds_per_round'][0]:.3f}; each the mean of {bench.EVAL_REPS} in its round)" in table
    host_row, = [line for line in table.splitlines() if line.startswith("host, timed epochs")]
    assert "sgemm" in host_row and "stolen / taken by other processes" in host_row
    f = r["floor"]                                                  # 200 images of 1,048,320 FLOPs; 100 of 407,040
    assert (f["epoch_gflop"], f["eval_gflop"]) == (200 * 1_048_320 / 1e9, 100 * 407_040 / 1e9)
    assert len(f["sgemm_gflops_per_round"]) == 1 and f["sgemm_gflops"] == statistics.median(f["sgemm_gflops_per_round"])
    assert f["floor_seconds"] == pytest.approx(f["epoch_gflop"] / f["sgemm_gflops"], rel=1e-12)
    for name in r["contenders"]:
        assert f["fraction"][name] == pytest.approx(f["floor_seconds"] / r["seconds_per_epoch"][name], rel=1e-12)
    assert f["eval_fraction"] == pytest.approx(f["eval_gflop"] / f["sgemm_gflops"] / r["eval_seconds"], rel=1e-12)
    assert set(f["blas"]["variables"]) == set(bench.BLAS_VARIABLES)
    assert r["cpu"] == bench.cpu_info() and r["processor"] == r["cpu"]["processor"]


@pytest.mark.slow
def test_bench_json_record_with_the_torch_peer_and_no_baseline(tmp_path):
    pytest.importorskip("torch")
    r = _bench_json(tmp_path, "--no-baseline", "--peer", "torch", "--epochs", "2")
    assert r["contenders"] == ["jaxcnn", "torch"] and r["rounds"] == 2
    assert r["compile_seconds"]["torch"] is None and r["torch_threads"] == os.cpu_count()
    assert all(len(r["epoch_seconds"][name]) == 2 for name in r["contenders"])
    medians = {name: statistics.median(s) for name, s in r["epoch_seconds"].items()}
    assert r["seconds_per_epoch"] == medians
    assert r["ratios"] == {"torch/jaxcnn": medians["torch"] / medians["jaxcnn"]}
    per_round = [t / j for t, j in zip(r["epoch_seconds"]["torch"], r["epoch_seconds"]["jaxcnn"])]
    assert r["round_ratios"]["torch/jaxcnn"] == {"per_round": per_round, "median": statistics.median(per_round),
                                                 "min": min(per_round), "max": max(per_round)}
