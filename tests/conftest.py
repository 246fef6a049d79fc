"""Test settings that make mistakes loud: float64 available, strict dtype promotion.

Rank promotion stays allowed: biases broadcast over any number of batch axes.
Strict promotion applies to every test except those marked
``standard_promotion``: optax and Flax rely on implicit promotion internally.
"""

import jax
import pytest

# float64 is needed for the reference comparisons and check_grads; every test
# states its dtypes explicitly, so enabling it changes no float32 test.
jax.config.update("jax_enable_x64", True)
# On GPUs float32 matmuls default to TF32; the oracle comparisons need full precision (a no-op on CPU).
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
  config.addinivalue_line("markers", "standard_promotion: run without strict dtype promotion")


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
  mode = "standard" if request.node.get_closest_marker("standard_promotion") else "strict"
  with jax.numpy_dtype_promotion(mode):
    yield
