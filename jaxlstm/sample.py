"""Sampling text from a character-level language model, one character at a time."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxlstm.models import SequenceModel, model_apply


def _logits(params: SequenceModel, states, ids: jax.Array, vocab_size: int, compute_dtype):
  """Feeds token ids ``(1, T)`` from ``states`` (the model's initial states when ``None``, its learned ``h0``
  if it has one); returns the new states and the last logits."""
  logits, states = model_apply(
    params, ids, per_step=True, vocab_size=vocab_size, compute_dtype=compute_dtype, states=states, return_state=True
  )
  return states, logits[0, -1]


@functools.partial(jax.jit, static_argnames=("length", "vocab_size", "compute_dtype"))
def _generate(params, prompt_ids, key, temperature, *, length, vocab_size, compute_dtype):
  states, logits = _logits(params, None, prompt_ids, vocab_size, compute_dtype)

  def body(carry, key):
    states, logits = carry
    token = jax.random.categorical(key, logits / temperature)
    states, logits = _logits(params, states, token[None, None], vocab_size, compute_dtype)
    return (states, logits), token

  _, tokens = jax.lax.scan(body, (states, logits), jax.random.split(key, length))
  return tokens


def sample_text(
  params: SequenceModel,
  vocab: Sequence[str],
  prompt: str = "",
  *,
  length: int = 200,
  temperature: float = 1.0,
  seed: int = 0,
  compute_dtype=None,
) -> str:
  """Continues ``prompt`` by ``length`` characters sampled from the model.

  Args:
    params: a trained :class:`SequenceModel` whose inputs and outputs are the
      ``len(vocab)`` characters.
    vocab: the characters, indexed by token id.
    prompt: text to condition on; every character must be in ``vocab``. An
      empty prompt starts from a newline (or token 0 if there is none).
    length: characters to generate.
    temperature: softmax temperature; lower is more conservative.
    seed: PRNG seed.
    compute_dtype: e.g. ``jnp.bfloat16``, as in :func:`jaxlstm.models.model_apply`.

  Returns:
    The prompt followed by the generated characters.

  Raises:
    ValueError: for ``length < 1``, a non-positive ``temperature``, or a prompt character outside ``vocab``.

  Example:
    >>> from jaxlstm.models import model_init
    >>> from jaxlstm.sample import sample_text
    >>> vocab = "abc "
    >>> model = model_init(jax.random.key(0), len(vocab), len(vocab), hidden=8)  # untrained: random text
    >>> text = sample_text(model, vocab, "ab", length=10, temperature=0.5)
    >>> text[:2], len(text), set(text) <= set(vocab)
    ('ab', 12, True)
  """
  if length < 1:
    raise ValueError(f"length must be >= 1; got {length}")
  if temperature <= 0:
    raise ValueError(f"temperature must be positive; got {temperature}")
  index = {c: i for i, c in enumerate(vocab)}
  unknown = sorted({c for c in prompt if c not in index})
  if unknown:
    raise ValueError(f"prompt has characters that are not in the model's vocabulary: {unknown!r}")
  ids = [index[c] for c in prompt] or [index.get("\n", 0)]
  tokens = _generate(
    params,
    jnp.asarray([ids], jnp.int32),
    jax.random.key(seed),
    jnp.float32(temperature),
    length=length,
    vocab_size=len(vocab),
    compute_dtype=compute_dtype,
  )
  return prompt + "".join(vocab[int(t)] for t in tokens)
