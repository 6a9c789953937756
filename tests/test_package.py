"""The installed package, as a new user gets it: a wheel built from this tree, installed into a fresh
venv outside the checkout, runs the verification, trains, evaluates, and imports nothing from here."""
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(cmd, cwd, timeout=900, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAX_ENABLE_X64", "VIRTUAL_ENV")}
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env={**environ, "JAX_PLATFORMS": "cpu", **env},
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, a working folder outside the checkout, the wheel)."""
    root = tmp_path_factory.mktemp("installed")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist", REPO], cwd=root)
    wheel, = (root / "dist").glob("jaxcnn-*.whl")
    venv.create(root / "venv", with_pip=True)
    _run([root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", wheel], cwd=root)
    (root / "work").mkdir()
    return root / "venv" / "bin", root / "work", wheel


@pytest.mark.slow
def test_the_wheel_is_small_and_holds_the_package_data(installed):
    import zipfile

    _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "jaxcnn/verification/golden.npz" in names and "jaxcnn/verification/checks.py" in names
    assert {f"jaxcnn/report/{p.name}" for p in (REPO / "jaxcnn" / "report").glob("*.py")} <= set(names)
    assert {f"jaxcnn/verification/octave/{m}.m" for m in ("sigm", "expand", "flipall")} <= set(names)   # jaxcnn check's
    assert {f"jaxcnn/configs/{c.name}" for c in (REPO / "configs").glob("*.toml")} <= set(names)
    assert {f"jaxcnn/tutorials/{t.name}" for t in (REPO / "docs" / "tutorials").glob("*.md")} <= set(names)
    assert len([n for n in names if n.startswith("jaxcnn/tutorials/") and n.endswith(".md")]) >= 3
    assert "jaxcnn/verification/symbolic.py" in names
    assert {"jaxcnn/spin_allreduce.cc", "jaxcnn/phase_patches.cc"} <= set(names)   # compiled on first use (jaxcnn.native)
    assert not [n for n in names if n.startswith(("verification/", "configs/", "tests/"))]   # no generic top level
    assert wheel.stat().st_size < 2_000_000


@pytest.mark.slow
def test_imports_come_from_the_installed_package(installed):
    bin_, work, _ = installed
    out = _run([bin_ / "python", "-c", "import jaxcnn, jaxcnn.verification, jaxcnn.configs, json;"
                "print(json.dumps([jaxcnn.__file__, jaxcnn.verification.__file__]))"], cwd=work)
    for path in json.loads(out.stdout):
        assert Path(path).resolve().is_relative_to((bin_.parent).resolve()), path
        assert not Path(path).resolve().is_relative_to(REPO)
    missing = subprocess.run([bin_ / "python", "-c", "import verification"], cwd=work, capture_output=True)
    assert missing.returncode != 0                                        # the name stays free for others


@pytest.mark.slow
def test_the_installed_package_builds_its_cpp_from_the_shipped_sources(installed, tmp_path):
    """The wheel's C++ sources compile outside the checkout against the installed jaxlib's headers, into the
    cache folder, and a split epoch then holds the custom calls: the all-reduce, conv1's patch matrix read from
    the stored images in place and conv2's."""
    bin_, work, _ = installed
    out = _run([bin_ / "python", "-c", "import jax, re;"
                "jax.config.update('jax_num_cpu_devices', 2);"
                "from jaxcnn import EXAMPLE_LAYERS, init_net, native_patches, parallel, spin_allreduce, train;"
                "from jaxcnn.optimizers import init_state, spec_for;"
                "import jax.numpy as jnp, numpy as np;"
                "net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, jnp.float32);"
                "spec = spec_for('sgd'); mesh = parallel.batch_mesh(32);"
                "x, y = parallel.replicated((jnp.zeros((64, 28, 28, 1)), jnp.zeros((64, 10))), mesh);"
                "text = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh).lower(net, init_state(spec, net, 1.0),"
                " jnp.float32(np.nan), x, y, jnp.arange(64, dtype=jnp.int32).reshape(2, 32)).compile().as_text();"
                "print(parallel.gradient_all_reduce(net, mesh), spin_allreduce.status(), native_patches.status());"
                "print(sorted(set(re.findall(r'custom_call_target=\"(jaxcnn_\\w+)\"', text))))"],
               cwd=work, JAXCNN_CACHE=str(tmp_path / "cache"))
    status, calls = out.stdout.strip().splitlines()[-2:]
    assert status.startswith(f"spin (jaxcnn/spin_allreduce.cc) built at {tmp_path / 'cache'}")
    assert status.endswith(" native (jaxcnn/phase_patches.cc)")
    assert calls == "['jaxcnn_phase_patches_f32', 'jaxcnn_phase_patches_of_rows_f32', 'jaxcnn_spin_allreduce_f32']"


@pytest.mark.slow
def test_verify_train_and_eval_run_from_the_wheel(installed):
    bin_, work, _ = installed
    verified = _run([bin_ / "jaxcnn", "verify"], cwd=work)
    assert verified.stdout.splitlines()[-1].startswith(tuple(f"{n} passed, 0 failed" for n in range(80, 200)))
    listed = _run([bin_ / "jaxcnn", "configs"], cwd=work).stdout
    assert {line.split()[0] for line in listed.splitlines()} >= {"mnist", "fashion_mnist", "sweep_seeds"}
    _run([bin_ / "jaxcnn", "train", "fashion_mnist", "--set", "data.n_train=1000", "--set", "data.n_test=200",
          "--out", "run", "--no-progress"], cwd=work)
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["n_train"] == 1000 and summary["n_test"] == 200 and 0 < summary["test_error"] < 0.9
    evaluated = json.loads(_run([bin_ / "jaxcnn", "eval", "run/net.npz", "--dataset", "fashion_mnist",
                                 "--n-test", "200", "--json"], cwd=work).stdout)
    assert evaluated["test_error"] == summary["test_error"]


@pytest.mark.slow
def test_check_runs_from_the_wheel_in_python_and_octave(installed):
    """`jaxcnn check` of an installed jaxcnn: the packaged MNIST cases and the Octave helpers travel in the wheel."""
    bin_, work, _ = installed
    fixtures = REPO / "tests" / "check_fixtures"
    out = _run([bin_ / "jaxcnn", "check", fixtures / "loops_cnnbp.py"], cwd=work).stdout
    assert "correct: 18 quantities" in out
    octave = _run([bin_ / "jaxcnn", "check", fixtures / "octave", "--json"], cwd=work).stdout
    assert json.loads(octave)["passed"] is True


@pytest.mark.slow
def test_the_tutorials_come_with_the_wheel(installed):
    """The installed package has the tutorials' sources; without the tutorials extra, `jaxcnn tutorials`
    says which extra to install (one line, exit 2)."""
    bin_, work, _ = installed
    out = _run([bin_ / "python", "-c", "from jaxcnn import tutorials; print(tutorials.names()); "
                "print(len(tutorials.source(tutorials.names()[0])))"], cwd=work).stdout.splitlines()
    assert out[0].startswith("['01_the_lectures_net', ") and int(out[1]) > 1000
    result = subprocess.run([bin_ / "jaxcnn", "tutorials", "nb"], cwd=work, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("jaxcnn: error: the tutorials need ")
    assert "pip install 'jaxcnn[tutorials]'" in result.stderr and not (work / "nb").exists()
