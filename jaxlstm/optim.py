"""Optimizers by name, with warmup + cosine schedules and gradient clipping, built from optax parts."""

from __future__ import annotations

import optax

OPTIMIZERS = {"adam": optax.adam, "rmsprop": optax.rmsprop, "sgd": optax.sgd, "adamw": optax.adamw}


def make_schedule(
  learning_rate: float,
  *,
  schedule: str = "constant",
  warmup_steps: int = 0,
  total_steps: int | None = None,
  end_factor: float = 0.0,
) -> optax.Schedule:
  """A learning-rate schedule.

  Args:
    learning_rate: peak learning rate.
    schedule: ``"constant"`` or ``"cosine"`` (decay to ``end_factor * learning_rate``
      at ``total_steps``).
    warmup_steps: linear warmup from 0 over this many steps, for either schedule.
    total_steps: length of the run, needed by ``"cosine"``.
    end_factor: final learning rate as a fraction of the peak, for ``"cosine"``.

  Returns:
    An optax schedule, ``step -> learning rate``.

  Raises:
    ValueError: for a non-positive ``learning_rate``, a negative ``warmup_steps``, an unknown ``schedule``,
      or a cosine schedule whose ``total_steps`` does not exceed ``warmup_steps``.

  Example:
    >>> from jaxlstm.optim import make_schedule
    >>> lr = make_schedule(1e-2, schedule="cosine", warmup_steps=10, total_steps=100)
    >>> [round(float(lr(step)), 4) for step in (0, 5, 10, 100)]
    [0.0, 0.005, 0.01, 0.0]
  """
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be positive; got {learning_rate}")
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}")
  if schedule == "constant":
    if warmup_steps == 0:
      return optax.constant_schedule(learning_rate)
    return optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, warmup_steps), optax.constant_schedule(learning_rate)], [warmup_steps]
    )
  if schedule == "cosine":
    if total_steps is None or total_steps <= warmup_steps:
      raise ValueError(f"total_steps must exceed warmup_steps={warmup_steps} for a cosine schedule; got {total_steps}")
    return optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(warmup_steps, 1), total_steps, end_value=end_factor * learning_rate
    )
  raise ValueError(f"schedule must be 'constant' or 'cosine'; got {schedule!r}")


def make_optimizer(
  name: str = "adam", learning_rate: float | optax.Schedule = 1e-3, *, clip_norm: float | None = None, **kwargs
) -> optax.GradientTransformation:
  """An optimizer by name, optionally clipping gradients by global norm first.

  Args:
    name: ``"adam"``, ``"rmsprop"``, ``"sgd"`` or ``"adamw"``.
    learning_rate: a float or an optax schedule (see :func:`make_schedule`).
    clip_norm: if given, clip the gradients to this global norm before the update.
    **kwargs: passed to the optax optimizer (for example ``momentum`` for sgd).

  Returns:
    An ``optax.GradientTransformation``.

  Raises:
    ValueError: for an unknown ``name`` or a non-positive ``clip_norm``.

  Example:
    >>> from jaxlstm.optim import make_optimizer, make_schedule
    >>> opt = make_optimizer("adam", make_schedule(1e-3, schedule="cosine", warmup_steps=100,
    ...                                            total_steps=2000), clip_norm=1.0)
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> state = jaxlstm.init_train_state(params, opt)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, _ = opt.update(grads, state.opt_state, params)  # step 0 of the warmup: no change yet
    >>> float(jnp.abs(updates.w_x).max())
    0.0
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}; got {name!r}")
  opt = OPTIMIZERS[name](learning_rate, **kwargs)
  if clip_norm is not None:
    if clip_norm <= 0:
      raise ValueError(f"clip_norm must be positive; got {clip_norm}")
    opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
  return opt
