r"""Recurrent regularizers for any cell: variational dropout, zoneout and weight drop.

Four options of :func:`jaxlstm.layer` and :func:`jaxlstm.stack`, each a rate
in ``[0, 1)``, drawn from the call's ``key``:

* ``input_dropout``: variational dropout on the layer's input (Gal &
  Ghahramani 2016), Keras' ``dropout``: one mask per sequence, the same at
  every step, scaled by ``1 / (1 - rate)``.
* ``recurrent_dropout``: variational dropout on ``h_{t-1}`` where it enters
  the recurrent projection, Keras' ``recurrent_dropout``: one mask per sequence
  *and per gate*. The carried state itself is not dropped (a GRU's
  ``z * h_{t-1}`` sees the whole ``h_{t-1}``). With it, ``input_dropout`` also
  draws one mask per gate, as Keras does (its ``implementation=1``, which Keras
  switches to whenever ``recurrent_dropout > 0``):

  .. math::

    z_g = (x \odot m^x_g) W_{x,g} + (h_{t-1} \odot m^h_g) W_{h,g} \quad \text{for each gate block } g

* ``zoneout`` (Krueger et al. 2017): at each step each unit of the state keeps
  its previous value with probability ``rate``,
  :math:`s_t = d_t \odot s_{t-1} + (1 - d_t) \odot \tilde s_t`, with a fresh
  mask ``d_t`` per step, row and unit. A float applies to every field of the
  state (an LSTM's ``h`` and ``c``); a mapping such as ``{"h": 0.05, "c": 0.5}``
  (the paper's LSTM setting) gives each field its own rate. Without a key, in
  evaluation, each unit moves by its expectation,
  :math:`s_t = p\, s_{t-1} + (1 - p)\, \tilde s_t`, so zoneout belongs to the
  model: pass the same rates to evaluate it.
* ``weight_drop``: DropConnect on the recurrent weights ``w_h`` (Wan et al.
  2013; AWD-LSTM's weight drop, Merity et al. 2018): one mask on the matrix per
  call, shared by the batch and every step.

Where they run. ``weight_drop`` and an ``input_dropout`` without
``recurrent_dropout`` change the layer's params and input before its kernel
runs, so every kernel runs them, the fused one included. ``recurrent_dropout``
and ``zoneout`` act inside the time loop: the reference kernel scans the cell's
step with them wrapped around it (:attr:`jaxlstm.LayerCall.in_loop`), and an
explicit ``impl`` of another kernel raises.

The dropouts need a key; for evaluation pass rate 0 (or use the Flax modules,
whose ``deterministic`` does it). The same key gives the same masks, so a run
is reproducible from its key. The masks of a layer call are, exactly
(``bernoulli`` is :func:`jax.random.bernoulli`, ``batch`` the inputs' batch
axes, ``G`` the cell's gate blocks, ``P`` the width of ``h``)::

  k_input, k_recurrent, k_zoneout, k_weight = jax.random.split(key, 4)
  keep(k, rate, shape) = bernoulli(k, 1 - rate, shape) / (1 - rate)

  input_dropout alone:
    keep(k_input, rate, (*batch, I)), the same at every step
  input_dropout with recurrent_dropout:
    keep(k_input, rate, (*batch, G, I))
  recurrent_dropout:
    keep(k_recurrent, rate, (*batch, G, P))
  weight_drop:
    keep(k_weight, rate, w_h.shape)
  zoneout, training: the j-th zoned field (in the state's field order)
    keeps its old value where
    bernoulli(jax.random.split(k_zoneout, n_zoned)[j], rate_j, (*batch, T, F_j))
    (time-major: (T, *batch, F_j))

:func:`jaxlstm.stack` gives layer ``i``'s direction ``d`` (0 forward, 1
backward) the key ``jax.random.split(jax.random.fold_in(key, 1), (L, 2))[i, d]``,
so its dropout between layers draws the masks it draws without regularizers.

References:
  Gal & Ghahramani (2016), A theoretically grounded application of dropout in
  recurrent neural networks. Krueger et al. (2017), Zoneout: regularizing RNNs
  by randomly preserving hidden activations. Wan et al. (2013), Regularization
  of neural networks using DropConnect. Merity, Keskar & Socher (2018),
  Regularizing and optimizing LSTM language models.
"""

from jaxlstm._src.regularizers import Regularizers, check_rate, check_regularizers, dropout_mask

__all__ = ["Regularizers", "check_rate", "check_regularizers", "dropout_mask"]
