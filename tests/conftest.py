"""Global switches, once: float64 available (the verification is float64; float32 tests ask for it
explicitly), and every warning an error (pyproject's filterwarnings)."""
from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO.parent / "shared" / "golden" / "toolbox_golden.mat"
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def golden():
    import scipy.io

    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing: the tests need ../shared/golden beside the checkout")
    return scipy.io.loadmat(GOLDEN, struct_as_record=False)


@pytest.fixture(scope="session")
def fashion():
    """Debian's Fashion-MNIST (CI installs dataset-fashion-mnist)."""
    from jaxcnn.data import load_idx_folder

    if not FASHION.is_dir():
        pytest.fail(f"{FASHION} is missing: apt-get install dataset-fashion-mnist")
    return load_idx_folder(FASHION, "fashion_mnist")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
