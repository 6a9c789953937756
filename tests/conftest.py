"""Global switches, once: float64 available (the verification is float64; float32 tests ask for it
explicitly), every warning an error (pyproject's filterwarnings), and the Hypothesis profile."""
import os
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import settings

from tests.helpers import hypothesis_profile

jax.config.update("jax_enable_x64", True)

# "ci" (CI=true): the same draws every run, so a red build reproduces and a green one is not luck; no
# example database to keep. "dev": fresh draws each run, failures replayed from .hypothesis/. Neither has a
# deadline: the first example of a test compiles. Both start from Hypothesis's "default" profile, not from
# whatever is loaded now (Hypothesis itself loads its own "ci" profile wherever a CI variable exists, even
# CI=""). Per-test @settings (max_examples) are built on top of the profile loaded here, because conftest
# runs before the test modules are imported.
_BASE = settings.get_profile("default")
settings.register_profile("ci", _BASE, derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", _BASE, deadline=None)
settings.load_profile(hypothesis_profile(os.environ))

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO.parent / "shared" / "golden" / "toolbox_golden.mat"
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def golden():
    """The full toolbox_golden.mat (the packaged compact copy is tested against it in test_verification)."""
    from jaxcnn.verification import golden as golden_mod

    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing: the tests need ../shared/golden beside the checkout")
    return golden_mod.load(GOLDEN)


@pytest.fixture(scope="session")
def fashion_folder():
    """Debian's Fashion-MNIST folder of four .gz IDX files (scripts/test installs dataset-fashion-mnist where
    it can); missing is a failure, not a skip."""
    if not FASHION.is_dir():
        pytest.fail(f"{FASHION} is missing: apt-get install dataset-fashion-mnist (scripts/test does this as root)")
    return FASHION


@pytest.fixture(scope="session")
def fashion(fashion_folder):
    """Debian's Fashion-MNIST, loaded."""
    from jaxcnn.data import load_idx_folder

    return load_idx_folder(fashion_folder, "fashion_mnist")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def no_real_mirrors(monkeypatch, tmp_path_factory):
    """No test may reach the internet: downloads go to a closed loopback port unless a test serves one,
    and the cache is a fresh folder."""
    monkeypatch.setenv("JAXCNN_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path_factory.mktemp("cache")))
