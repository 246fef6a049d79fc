"""Test settings that make mistakes loud: float64 available, strict dtype promotion.

Rank promotion stays allowed: biases broadcast over any number of batch axes.
"""

import jax

# float64 is needed for the reference comparisons and check_grads; every test
# states its dtypes explicitly, so enabling it changes no float32 test.
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
