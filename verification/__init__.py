"""The proofs of jaxcnn's delta rule (`jaxcnn verify`) and the checker of a user's own (`jaxcnn check`)."""


def check(cnnbp_or_path, *, cnnff=None, options=None):
    """Check a user's `cnnbp` (a callable, a Python file, or a folder with `cnnbp.m` for GNU Octave) against
    the lecture's, quantity by quantity, and name the mistake; returns a `checker.CheckResult`, whose
    `assert_correct()` raises AssertionError carrying the diagnosis. See `jaxcnn.verification.checker`."""
    from .checker import check as _check

    return _check(cnnbp_or_path, cnnff=cnnff, options=options)
