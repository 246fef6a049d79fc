"""Type aliases shared by the cells' params and the converters."""

from __future__ import annotations

from typing import TypeAlias

import jax
import numpy as np

# A params field's array. The initializers return JAX arrays; the converters of jaxlstm.interop build params
# out of NumPy arrays (the peers' weights, transposed and stacked in NumPy), and the cells read either alike.
Array: TypeAlias = jax.Array | np.ndarray
