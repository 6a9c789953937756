"""The compiled programs get the XLA:CPU options of their dtype: float64 dots on YNNPACK, float32 on Eigen."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import EXAMPLE_LAYERS, init_net, train, xla_options
from jaxcnn.optimizers import init_state, spec_for

YNN = '"kind":"__ynn_fusion"'


def _epoch_hlo(dtype) -> str:
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype)
    spec = spec_for("sgd")
    x, y = jnp.zeros((100, 28, 28, 1), dtype), jnp.zeros((100, 10), dtype)
    epoch = train.make_epoch_fn(spec.transformation(), donate=False)
    return epoch.lower(net, init_state(spec, net, 1.0), jnp.asarray(np.nan, dtype), x, y,
                       jnp.zeros((2, 50), jnp.int32)).compile().as_text()


def _eval_hlo(dtype) -> str:
    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, dtype)
    return train._predicted_labels.lower(net, jnp.zeros((500, 28, 28, 1), dtype), 500, None).compile().as_text()


def test_float64_training_and_evaluation_hand_their_convolution_products_to_ynnpack():
    # training: each conv's forward product and kernel gradient, and conv2's delta back to conv1's maps
    assert _epoch_hlo(jnp.float64).count(YNN) == 5
    assert _eval_hlo(jnp.float64).count(YNN) == 2                # the two forward products


def test_float32_programs_keep_every_dot_on_xla_s_own_kernels():
    for hlo in (_epoch_hlo(jnp.float32), _eval_hlo(jnp.float32)):
        assert YNN not in hlo and " dot(" in hlo


def test_one_jitted_function_per_dtype_each_with_its_options():
    seen = []
    square = xla_options.jit(lambda x: x * x, options=lambda dtype: seen.append(dtype) or {})
    for dtype in (np.float32, np.float64, np.float32):
        assert square(jnp.full(3, 3, dtype)).dtype == dtype
    square.lower(jnp.ones(3, np.float64))
    assert seen == [np.float32, np.float64]                      # each compiled for once, then reused
    square(x=jnp.ones(3, np.float16))
    assert seen == [np.float32, np.float64, np.float16]          # a keyword argument's dtype counts too
    compiled = square._cache_size()
    square(jnp.full(3, 3, np.float64)), square(jnp.full(3, 3, np.float32)), square(x=jnp.ones(3, np.float16))
    assert square._cache_size() == compiled > 0                  # the same calls again: nothing recompiled
    assert xla_options.for_dtype(np.float64) == {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    assert xla_options.for_dtype(np.float32) == {"xla_cpu_experimental_ynn_fusion_type": "",
                                                  "xla_cpu_prefer_vector_width": "512"}


def test_the_jitted_function_still_donates_and_takes_static_arguments():
    scaled = xla_options.jit(lambda x, k: x * k, static_argnums=1, donate_argnums=0)
    x = jnp.ones(4, jnp.float64)
    assert float(scaled(x, 3)[0]) == 3.0
    assert x.is_deleted()                                        # donated: its buffer went to the result


@pytest.mark.parametrize("args, dtype", [
    ((np.int32(1), jnp.ones(2, jnp.float64)), np.float64),      # the first floating leaf decides
    (({"w": jnp.ones(2, jnp.bfloat16)}, 3.0, "text"), jnp.bfloat16),
    ((init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, jnp.float64), 500), np.float64),   # a Net's params
    ((jnp.arange(3), jax.random.key(0)), np.float32)])          # no floating array: float32's options
def test_floating_dtype_of_the_arguments(args, dtype):
    assert xla_options.floating_dtype(args) == dtype


AVX512 = "avx512f" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False


@pytest.mark.skipif(not AVX512, reason="512-bit vectors need AVX-512; elsewhere the option changes nothing")
def test_float32_elementwise_loops_run_sixteen_lanes_wide(tmp_path):
    """The evaluation program's sigmoid loops, as LLVM optimised them (XLA's dump), work on 16-float vectors,
    not XLA's default 8: `xla_cpu_prefer_vector_width` reached the compiler."""
    code = ("import jax, jax.numpy as jnp; from jaxcnn import EXAMPLE_LAYERS, init_net, train;"
            "net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, jnp.float32);"
            "train._predicted_labels.lower(net, jnp.zeros((500, 28, 28), jnp.float32), 500, None).compile()")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_dump_to={tmp_path}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loops = [f.read_text() for f in tmp_path.glob("*_predicted_labels*multiply*fusion*ir-with-opt.ll")]
    assert loops, sorted(p.name for p in tmp_path.iterdir())[:20]
    wide, narrow = sum(t.count("<16 x float>") for t in loops), sum(t.count("<8 x float>") for t in loops)
    assert wide > 100 and wide > 10 * narrow, (wide, narrow)
