"""Checkpoints of a training state with orbax-checkpoint.

Orbax writes each checkpoint into a temporary directory and renames it into
place only when it is complete, so a process killed during a save leaves the
previous checkpoint as the latest loadable one. This module adds the policy
(save every N steps, keep the last K) and errors that name the path.

Each checkpoint also records its pytree structure, which holds what is not
an array: the NamedTuple types and the params' static fields (an RNN's
``activation``). :meth:`Checkpointer.restore` refuses to load a checkpoint
into a model of another structure, so a relu RNN is never read back into a
tanh one with every array matching.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

# Key of the saved pytree structure in each checkpoint's custom metadata.
STRUCTURE_KEY = "jaxlstm_tree_structure"


class CheckpointError(RuntimeError):
  """A checkpoint could not be read: corrupt, incomplete, or for another model.

  Example:
    >>> import tempfile
    >>> from jaxlstm.checkpoint import Checkpointer, CheckpointError
    >>> relu = jaxlstm.rnn_init(jax.random.key(0), 3, 5, activation="relu")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   ckpt = Checkpointer(tmp)
    ...   ckpt.save(1, relu)
    ...   try:
    ...     ckpt.restore(relu._replace(activation="tanh"))  # every array matches, the model does not
    ...   except CheckpointError as e:
    ...     print("saved from a model of another structure" in str(e))
    ...   ckpt.close()
    True
  """


class Checkpointer:
  """Saves every ``save_every`` steps under ``directory`` and keeps the last ``keep``.

  Args:
    directory: where checkpoints live, one sub-directory per step.
    save_every: :meth:`maybe_save` saves when ``step % save_every == 0``.
    keep: how many of the most recent checkpoints to keep.

  Example:
    >>> import tempfile
    >>> import optax
    >>> from jaxlstm.checkpoint import Checkpointer
    >>> state = jaxlstm.init_train_state(jaxlstm.gru_init(jax.random.key(0), 3, 5), optax.sgd(0.1))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...   ckpt = Checkpointer(tmp, save_every=2, keep=2)
    ...   saved = [ckpt.maybe_save(step, state._replace(step=jnp.int32(step))) for step in range(1, 7)]
    ...   steps = ckpt.all_steps()  # the last two that were saved
    ...   restored = ckpt.restore(state)  # the latest one, into the structure of ``state``
    ...   ckpt.close()
    >>> saved, steps, int(restored.step)
    ([False, True, False, True, False, True], [4, 6], 6)
  """

  def __init__(self, directory: str | os.PathLike, *, save_every: int = 1000, keep: int = 3):
    if save_every < 1:
      raise ValueError(f"save_every must be >= 1; got {save_every}")
    if keep < 1:
      raise ValueError(f"keep must be >= 1; got {keep}")
    self.directory = os.path.abspath(os.fspath(directory))
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or ``None``; see the class's example."""
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of every complete checkpoint kept, in increasing order; see the class's example."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` (a pytree of arrays) as checkpoint ``step``, replacing one already there.

    The arrays are copied to the host, and the pytree structure (types and
    static fields) is recorded, so that :meth:`restore` can refuse another
    model. See the class's example.
    """
    step = int(step)
    if step in self.all_steps():
      self._manager.delete(step)
    structure = str(jax.tree_util.tree_structure(state))
    state = jax.tree_util.tree_map(np.asarray, state)
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True, custom_metadata={STRUCTURE_KEY: structure})
    self._manager.wait_until_finished()

  def maybe_save(self, step: int, state: Any) -> bool:
    """Saves if ``step`` is a multiple of ``save_every``; returns whether it did. See the class's example."""
    if int(step) % self.save_every:
      return False
    self.save(step, state)
    return True

  def path(self, step: int) -> str:
    """The directory of checkpoint ``step``, whether or not it exists.

    Example:
      >>> import os
      >>> import tempfile
      >>> from jaxlstm.checkpoint import Checkpointer
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...   ckpt = Checkpointer(tmp)
      ...   print(ckpt.path(500) == os.path.join(ckpt.directory, "500"))
      ...   ckpt.close()
      True
    """
    return os.path.join(self.directory, str(step))

  def restore(self, like: Any, step: int | None = None) -> Any:
    """Restores a checkpoint into the structure, shapes and dtypes of ``like``.

    Args:
      like: a pytree with the structure of the saved state (for example a
        freshly initialized one).
      step: which checkpoint; the latest by default.

    Returns:
      The restored pytree.

    Raises:
      CheckpointError: naming the checkpoint path, when there is none, or when
        it is corrupt or does not match ``like``.

    Example:
      >>> import tempfile
      >>> from jaxlstm.checkpoint import Checkpointer
      >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 5, 2)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...   ckpt = Checkpointer(tmp)
      ...   ckpt.save(1, params)
      ...   ckpt.save(2, jax.tree.map(lambda a: a + 1, params))
      ...   first = ckpt.restore(params, step=1)
      ...   ckpt.close()
      >>> bool((first[1].w_h == params[1].w_h).all())
      True
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise CheckpointError(f"no checkpoint found in {self.directory}")
    path = self.path(step)
    if not os.path.isdir(path):
      raise CheckpointError(f"no checkpoint for step {step}: {path} does not exist")
    older = _check_structure(self._manager, step, like, path)
    _check_matches(self._manager, step, like, path)
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), like)
    try:
      if older:
        # Saved before a None field was added: orbax would refuse the target that has it, so the saved tree
        # is read as it is and its arrays put where ``like`` has them, by field name.
        return _refill(like, self._manager.restore(step, args=ocp.args.StandardRestore()))
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax and tensorstore raise many types for damaged files
      raise CheckpointError(
        f"checkpoint {path} could not be read (corrupt or incomplete): {type(e).__name__}: {_first_line(e)}"
      ) from e
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), jax.tree_util.tree_leaves(restored))

  def close(self) -> None:
    """Releases orbax's manager; the checkpoints stay on disk."""
    self._manager.close()


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else ""


def _check_structure(manager, step: int, like: Any, path: str) -> bool:
  """Compares the saved pytree structure (types and static fields) with ``like``'s, where it was recorded.

  Returns whether the checkpoint is of an older version of ``like``'s types, one without some of the
  ``None`` fields that ``like`` has (see :func:`_without_trailing_none`).
  """
  try:
    saved = (manager.metadata(step).custom_metadata or {}).get(STRUCTURE_KEY)
  except Exception:  # checkpoints written before the structure was recorded have no such metadata
    return False
  want = str(jax.tree_util.tree_structure(like))
  if saved is not None and _without_trailing_none(saved) != _without_trailing_none(want):
    raise CheckpointError(
      f"checkpoint {path} was saved from a model of another structure (its types or "
      f"static settings such as an RNN's activation differ): saved {saved}, the model is "
      f"{want}"
    )
  return saved is not None and saved != want


def _refill(like: Any, raw: Any) -> Any:
  """``like`` with the arrays of ``raw``, orbax's reading of it (NamedTuples as dicts, tuples as lists).

  A NamedTuple field that ``raw`` lacks must be ``None`` in ``like``.
  """
  if like is None:
    return None
  if isinstance(like, tuple) and hasattr(like, "_fields"):
    return type(like)(*(_refill(getattr(like, f), raw[f] if f in raw else None) for f in like._fields))
  if isinstance(like, (tuple, list)):
    return type(like)(_refill(x, r) for x, r in zip(like, raw))
  if isinstance(like, dict):
    return {k: _refill(v, raw[k]) for k, v in like.items()}
  return jnp.asarray(raw, np.asarray(like).dtype)


def _without_trailing_none(structure: str) -> str:
  """A structure string less the ``None`` children that end a NamedTuple's (or list's) children.

  A NamedTuple field added later with the default ``None`` (say ``SequenceModel.h0``) holds no arrays, so a
  checkpoint saved before the field existed is the same model; ``_check_matches`` still compares every array.
  ``"[*, CustomNode(...), None]"`` becomes ``"[*, CustomNode(...)]"``.
  """
  return re.sub(r"(, None)+\]", "]", structure)


def _check_matches(manager, step: int, like: Any, path: str) -> None:
  """Compares the saved tree's leaf shapes and dtypes with ``like`` before reading any data."""
  try:
    meta = manager.item_metadata(step)
    tree = getattr(meta, "tree", meta)
    saved = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
  except Exception as e:
    raise CheckpointError(
      f"checkpoint {path} has unreadable metadata (corrupt or incomplete): {type(e).__name__}: {_first_line(e)}"
    ) from e
  expected = jax.tree_util.tree_leaves_with_path(like)
  if len(saved) != len(expected):
    raise CheckpointError(
      f"checkpoint {path} does not match the model: it holds {len(saved)} arrays, the model has {len(expected)}"
    )
  # Orbax stores containers as dicts and lists, so compare leaves in their saved order by shape multiset
  # first, then one by one when the orders line up.
  saved_shapes = sorted((tuple(m.shape), str(np.dtype(m.dtype))) for _, m in saved)
  want_shapes = sorted((tuple(np.shape(a)), str(np.asarray(a).dtype)) for _, a in expected)
  if saved_shapes != want_shapes:
    for (kp, m), (kq, a) in zip(
      sorted(saved, key=lambda t: jax.tree_util.keystr(t[0])),
      sorted(expected, key=lambda t: jax.tree_util.keystr(t[0])),
    ):
      if tuple(m.shape) != tuple(np.shape(a)) or np.dtype(m.dtype) != np.asarray(a).dtype:
        raise CheckpointError(
          f"checkpoint {path} does not match the model: saved array "
          f"{jax.tree_util.keystr(kp)} is {np.dtype(m.dtype)}{list(m.shape)}, the model "
          f"expects {np.asarray(a).dtype}{list(np.shape(a))} at {jax.tree_util.keystr(kq)}"
        )
    raise CheckpointError(
      f"checkpoint {path} does not match the model: saved shapes {saved_shapes} differ from {want_shapes}"
    )
