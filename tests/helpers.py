"""Assertions shared by the tests (plain functions; conftest.py keeps the fixtures and global switches)."""
import jax
import numpy as np


def hypothesis_profile(environ) -> str:
    """"ci" where the CI variable is set (CI=true on the CI runners), else "dev"."""
    return "ci" if environ.get("CI", "").strip().lower() not in ("", "0", "false", "no") else "dev"


def assert_trees_close(got, want, rtol=0.0, atol=0.0, *, normwise=False, dtype=None):
    """Assert two pytrees hold the same arrays, leaf by leaf, up to rounding.

    First the structure (a zip over `jax.tree.leaves` would silently stop at the shorter tree), then each
    leaf's shape and dtype (and `dtype`, when given), then its values: elementwise
    |got - want| <= atol + rtol |want| (numpy's assert_allclose), or with `normwise` the whole leaf at
    once, max |got - want| <= atol + rtol max |want|. rtol = atol = 0 asks for equality, bit for bit.
    Failures name the leaf by its path, e.g. `['conv'][1]['k']`.
    """
    got_leaves, got_def = jax.tree_util.tree_flatten_with_path(got)
    want_leaves, want_def = jax.tree_util.tree_flatten_with_path(want)
    assert got_def == want_def, f"tree structures differ:\n  got  {got_def}\n  want {want_def}"
    for (path, g), (_, w) in zip(got_leaves, want_leaves, strict=True):
        name = jax.tree_util.keystr(path) or "(root)"
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, f"{name}: shape {g.shape}, want {w.shape}"
        assert g.dtype == w.dtype, f"{name}: dtype {g.dtype}, want {w.dtype}"
        if dtype is not None:
            assert g.dtype == np.dtype(dtype), f"{name}: dtype {g.dtype}, want {np.dtype(dtype)}"
        if normwise:
            err, size = float(np.max(np.abs(g - w), initial=0.0)), float(np.max(np.abs(w), initial=0.0))
            assert err <= atol + rtol * size, f"{name}: max |got - want| = {err:.3g} > {atol:g} + {rtol:g} * {size:.3g}"
        elif rtol == 0 and atol == 0:
            np.testing.assert_array_equal(g, w, err_msg=name, strict=True)
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=name)
