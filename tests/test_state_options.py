"""State options: a learned initial state (functional, Flax, fit, checkpoints) and stateful truncated BPTT in fit."""

import functools
import json
import os
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxlstm
import jaxlstm.linen
import jaxlstm.nnx
from jaxlstm.checkpoint import Checkpointer, CheckpointError
from jaxlstm.cli import main
from jaxlstm.experiment import RunConfig, check_stateful, load_task
from jaxlstm.models import model_init
from jaxlstm.train import evaluate, fit, init_train_state, stream_indices
from tests.helpers import normal, random_params

pytestmark = pytest.mark.standard_promotion

B, T, I, H = 2, 4, 3, 5


def tree_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def by_path(tree):
  """Leaves keyed by their path's names, so that an ``nnx.State`` (keys sorted) compares with a NamedTuple tree."""
  return {
    tuple(t for t in re.findall(r"\w+", jax.tree_util.keystr(path)) if t != "value"): leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def assert_same_grads(got, want):
  got, want = by_path(got), by_path(want)
  assert sorted(got) == sorted(want)
  for k in want:
    assert float(jnp.abs(want[k]).max()) > 0, k
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=str(k))


def random_state(params, seed=1):
  h0 = jaxlstm.initial_state_init(params)
  leaves, tree = jax.tree_util.tree_flatten(h0)
  return jax.tree_util.tree_unflatten(tree, [normal(a.shape, seed=seed + i, scale=0.5) for i, a in enumerate(leaves)])


# --- the learned initial state ---


def test_initial_state_init_layout_and_zeros():
  params = random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True, cell="gru")
  h0 = jaxlstm.initial_state_init(params)
  assert isinstance(h0[1], jaxlstm.Bidirectional) and h0[1].backward.h.shape == (H,)
  assert all(float(jnp.abs(a).max()) == 0.0 for a in jax.tree_util.tree_leaves(h0))
  xs = normal((B, T, I))
  # Zeros at first: the same outputs as the zero state.
  tree_equal(jaxlstm.stack(params, xs, jaxlstm.broadcast_state(h0, (B,))), jaxlstm.stack(params, xs))
  with pytest.raises(TypeError, match="params must be a non-empty tuple of layer params"):
    jaxlstm.initial_state_init({"w": jnp.ones(3)})
  with pytest.raises(ValueError, match=r"batch_shape must be a tuple of non-negative ints; got \(-1,\)"):
    jaxlstm.broadcast_state(h0, (-1,))


def test_learned_state_gradient_equals_the_hand_written_one():
  params = random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True)
  h0, xs = random_state(params), normal((B, T, I))

  def loss(h0):
    _, hs = jaxlstm.stack(params, xs, jaxlstm.broadcast_state(h0, (B,)))
    return jnp.sum(hs**2)

  def by_hand(h0):  # every row its own copy of the state: the gradient of h0 is the sum over rows
    rows = jax.tree_util.tree_map(lambda a: jnp.stack([a] * B), h0)
    _, hs = jaxlstm.stack(params, xs, rows)
    return jnp.sum(hs**2)

  got, want = jax.jit(jax.grad(loss))(h0), jax.jit(jax.grad(by_hand))(h0)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert float(jnp.abs(g).max()) > 0
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_resets_go_back_to_the_learned_state():
  params = random_params(jaxlstm.lstm_init, I, H)
  h0, xs = random_state(params), normal((1, 2 * T, I))
  resets = jnp.zeros((1, 2 * T), bool).at[0, T].set(True)
  _, hs = jaxlstm.layer(params, xs, jaxlstm.broadcast_state(h0, (1,)), resets=resets)
  _, tail = jaxlstm.layer(params, xs[:, T:], jaxlstm.broadcast_state(h0, (1,)))
  np.testing.assert_allclose(hs[:, T:], tail, rtol=1e-6, atol=1e-6)


def test_nnx_and_linen_modules_learn_the_same_state_gradient():
  xs = normal((B, T, I))
  model = jaxlstm.nnx.Stack(I, H, num_layers=2, bidirectional=True, learn_initial_state=True, rngs=nnx.Rngs(0))
  layer = jaxlstm.nnx.GRU(I, H, learn_initial_state=True, rngs=nnx.Rngs(0))
  params, lparams = model.params, layer.params
  assert jaxlstm.nnx.Stack(I, H, rngs=nnx.Rngs(0)).h0 is None  # off by default: no extra params

  def functional(h0, p=params):
    return jnp.sum(jaxlstm.stack(p, xs, jaxlstm.broadcast_state(h0, (B,)))[1] ** 2)

  # Each gradient jitted: one compile each, where run eagerly each scan in it compiled on its own.
  want = jax.jit(jax.grad(functional))(jaxlstm.initial_state_init(params))
  assert_same_grads(nnx.jit(nnx.grad(lambda m: jnp.sum(m(xs) ** 2)))(model)["h0"], want)
  lwant = jax.jit(jax.grad(lambda h0: jnp.sum(jaxlstm.layer(lparams, xs, jaxlstm.broadcast_state(h0, (B,)))[1] ** 2)))(
    jaxlstm.initial_state_init(lparams)
  )
  assert_same_grads(nnx.jit(nnx.grad(lambda m: jnp.sum(m(xs) ** 2)))(layer)["h0"], lwant)

  linen_model = jaxlstm.linen.Stack(H, num_layers=2, bidirectional=True, learn_initial_state=True)
  variables = linen_model.init(jax.random.key(0), xs)
  assert set(variables["params"]) == {jaxlstm.linen.WEIGHTS, jaxlstm.linen.INITIAL_STATE}
  grads = jax.jit(jax.grad(lambda v: jnp.sum(linen_model.apply(v, xs) ** 2)))(variables)["params"]["h0"]
  assert_same_grads(
    grads, jax.jit(jax.grad(functional))(variables["params"]["h0"], jaxlstm.linen.from_variables(variables))
  )
  module, variables = jaxlstm.linen.GRU.from_params(lparams, learn_initial_state=True)
  np.testing.assert_allclose(module.apply(variables, xs), layer(xs), rtol=1e-6)


def lm_data(n=12, vocab=4, seed=0):
  """``n`` consecutive windows of one random token sequence: ``xs[k + 1, 0] == ys[k, -1]``."""
  ids = np.random.default_rng(seed).integers(0, vocab, n * T + 1).astype(np.int32)
  return {"xs": ids[:-1].reshape(n, T), "ys": ids[1:].reshape(n, T)}


def lm_loss(params, batch, key, carry=None, *, vocab=4):
  del key
  out, states = jaxlstm.models.model_apply(
    params, batch["xs"], per_step=True, vocab_size=vocab, states=carry, return_state=True
  )
  return jaxlstm.models.task_loss("lm", out, batch)[0], states


def stateless_lm_loss(params, batch, key):
  return lm_loss(params, batch, key)[0]


def test_fit_trains_the_learned_state_and_checkpoints_it(tmp_path):
  model = model_init(jax.random.key(0), 4, 4, hidden=H, learn_initial_state=True)
  trained, _ = fit(
    model,
    stateless_lm_loss,
    lm_data(),
    batch_size=4,
    steps=3,
    optimizer=optax.adam(1e-2),
    checkpoint_dir=str(tmp_path),
    progress=False,
  )
  assert float(jnp.abs(trained.h0[0].h).max()) > 0  # it moved: the loss reached it
  restored = Checkpointer(tmp_path).restore(init_train_state(model, optax.adam(1e-2)))
  tree_equal(restored.params.h0, trained.h0)


def test_a_checkpoint_from_before_the_h0_field_still_loads(tmp_path):
  class SequenceModel(NamedTuple):  # the model type as it was, with two fields
    rnn: tuple
    head: jaxlstm.models.Dense

  new = model_init(jax.random.key(0), 3, 2, hidden=H)
  old = SequenceModel(new.rnn, new.head)
  ckpt = Checkpointer(tmp_path)
  ckpt.save(1, old)
  tree_equal(ckpt.restore(new), new)
  with pytest.raises(CheckpointError, match="another structure"):
    ckpt.restore(model_init(jax.random.key(0), 3, 2, hidden=H, learn_initial_state=True))
  ckpt.close()


# --- stateful fit ---


def test_stream_indices_follow_each_row():
  steps = [stream_indices(12, 3, s) for s in range(8)]
  assert [s.tolist() for s in steps[:4]] == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]
  tree_equal(steps[4], steps[0])  # an epoch later, every stream starts again


@functools.partial(jax.jit, static_argnames="lr")
def hand_step(params, batch, start, lr):
  """One plain SGD step of ``lm_loss`` from the carry ``start``; jitted, as an eager step compiled every scan anew."""
  (_, carry), grads = jax.value_and_grad(lambda p: lm_loss(p, batch, None, start), has_aux=True)(params)
  return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), carry


def hand_loop(params, data, steps, batch_size, lr, *, reset=True, stop=True):
  """TBPTT written out: each row's final state is the next step's start, reset where an epoch starts."""
  n = len(data["xs"])
  per_epoch = n // batch_size
  carry = None
  for s in range(steps):
    batch = {k: a[np.arange(batch_size) * per_epoch + s % per_epoch] for k, a in data.items()}
    if reset and s % per_epoch == 0:
      carry = None
    start = carry if (carry is None or not stop) else jax.lax.stop_gradient(carry)
    params, carry = hand_step(params, batch, start, lr)
  return params


def test_stateful_fit_carries_the_state_stops_the_gradient_and_resets_each_epoch():
  model = model_init(jax.random.key(0), 4, 4, hidden=H, learn_initial_state=True)
  data, kw = lm_data(), dict(batch_size=3, steps=6, optimizer=optax.sgd(0.5), progress=False)  # K = 4: 1.5 epochs
  got, history = fit(model, lm_loss, data, stateful=True, **kw)
  want = hand_loop(model, data, 6, 3, 0.5)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Each of the three ingredients changes the result, so the comparison above tests each of them.
  stateless, _ = fit(model, stateless_lm_loss, data, **kw)
  for other in (hand_loop(model, data, 6, 3, 0.5, reset=False), stateless):
    assert (
      max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(other)))
      > 1e-4
    )
  # The gradient through a carry computed by these params differs from the stopped one: it is a real stop.
  batch = lambda s: jax.tree_util.tree_map(lambda a: a[np.arange(3) * 4 + s], data)
  through = jax.jit(jax.grad(lambda p: lm_loss(p, batch(1), None, lm_loss(p, batch(0), None)[1])[0]))(model)
  stopped = jax.jit(
    jax.grad(lambda p: lm_loss(p, batch(1), None, jax.lax.stop_gradient(lm_loss(p, batch(0), None)[1]))[0])
  )(model)
  assert float(jnp.abs(through.rnn[0].w_h - stopped.rnn[0].w_h).max()) > 1e-6
  assert float(jnp.abs(stopped.h0[0].h).max()) == 0.0  # the learned state is reached only from an epoch start


def test_stateful_fit_resumes_exactly_inside_an_epoch(tmp_path):
  model = model_init(jax.random.key(0), 4, 4, hidden=H, learn_initial_state=True)
  kw = dict(batch_size=3, optimizer=optax.adam(1e-2), eval_every=3, progress=False, stateful=True)
  full, _ = fit(model, lm_loss, lm_data(), steps=6, checkpoint_dir=str(tmp_path / "a"), **kw)
  fit(model, lm_loss, lm_data(), steps=3, checkpoint_dir=str(tmp_path / "b"), **kw)  # stops at step 3 of 4
  resumed, _ = fit(model, lm_loss, lm_data(), steps=6, checkpoint_dir=str(tmp_path / "b"), resume=True, **kw)
  tree_equal(resumed, full)  # to the bit: the carry was checkpointed with the rest
  state = Checkpointer(tmp_path / "b").restore(
    init_train_state(model, optax.adam(1e-2))._replace(carry=jaxlstm.models.initial_states(model, (3,))), step=3
  )
  assert float(jnp.abs(state.carry[0].h).max()) > 0


def test_stateful_evaluation_reads_streams_in_order():
  params = random_params(jaxlstm.gru_init, I, H)
  seq = normal((7 * T, I))
  windows = {"xs": np.asarray(seq).reshape(7, T, I)}

  def fn(params, batch, key, carry):
    state, hs = jaxlstm.gru(params, batch["xs"], carry)
    return jnp.mean(hs**2), state

  got = evaluate(fn, params, windows, batch_size=3, stateful=True)["loss"]  # K = 3: streams of 3, 3 and 1
  total = sum(
    float(jnp.sum(jaxlstm.gru(params, seq[None, a * T : b * T])[1] ** 2)) for a, b in ((0, 3), (3, 6), (6, 7))
  )
  np.testing.assert_allclose(got, total / (7 * T * H), rtol=1e-5)


def test_stateful_errors():
  model, data = model_init(jax.random.key(0), 4, 4, hidden=H), lm_data()
  with pytest.raises(
    ValueError,
    match=r"stateful=True needs loss_fn\(params, batch, key, carry\) -> \(loss or "
    r"\(loss, metrics\), new_carry\); got a loss_fn that does not take carry",
  ):
    fit(model, stateless_lm_loss, data, batch_size=3, steps=1, stateful=True, progress=False)
  with pytest.raises(ValueError, match="loss_fn takes carry, a stateful loss; pass stateful=True"):
    fit(model, lambda p, b, k, carry: lm_loss(p, b, k, carry), data, batch_size=3, steps=1, progress=False)
  with pytest.raises(ValueError, match="eval_fn takes carry"):
    fit(
      model,
      stateless_lm_loss,
      data,
      batch_size=3,
      steps=1,
      progress=False,
      eval_fn=lambda p, b, k, carry: lm_loss(p, b, k, carry),
    )
  with pytest.raises(
    ValueError,
    match=r"to return \(loss or \(loss, metrics\), new_carry\); got a tuple whose "
    r"second item is dict",
  ):
    fit(
      model,
      lambda p, b, k, c: (stateless_lm_loss(p, b, k), {}),
      data,
      batch_size=3,
      steps=1,
      stateful=True,
      progress=False,
    )
  with pytest.raises(ValueError, match="stateful=True runs on one device; got devices=1"):
    fit(model, lm_loss, data, batch_size=3, steps=1, stateful=True, devices=1, progress=False)
  task = load_task(RunConfig(task="adding", task_options={"T": 5, "n_train": 8, "n_val": 4, "n_test": 4}))
  with pytest.raises(ValueError, match="stateful needs a language-model task"):
    check_stateful(task, RunConfig(stateful=True))


def test_text_windows_are_consecutive():
  task = load_task(RunConfig(task="text", task_options={"T": 8, "max_chars": 3000}))
  for split in (task.train, task.val, task.test):
    np.testing.assert_array_equal(split.xs[1:, 0], split.ys[:-1, -1])


# --- the command line ---


def test_cli_records_and_checks_the_state_options(tmp_path, capsys):
  out = str(tmp_path / "run")
  tiny = [
    "--task",
    "text",
    "--seq-len",
    "8",
    "--option",
    "max_chars=3000",
    "--hidden",
    "4",
    "--batch-size",
    "4",
    "--eval-every",
    "2",
    "--quiet",
    "--out",
    out,
  ]
  assert main(["train", *tiny, "--steps", "2", "--stateful", "--learn-initial-state"]) == 0
  with open(os.path.join(out, "config.json")) as f:
    cfg = json.load(f)
  assert cfg["stateful"] is True and cfg["learn_initial_state"] is True
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert summary["test_evaluation"].startswith("stateful") and "test_bits_per_char" in summary["test_stateless"]
  capsys.readouterr()
  assert main(["train", "--resume", "--out", out, "--no-stateful", "--no-learn-initial-state", "--quiet"]) == 2
  err = capsys.readouterr().err
  assert "--stateful gives stateful=False (the run has True)" in err
  assert "--learn-initial-state gives learn_initial_state=False (the run has True)" in err
  assert main(["train", "--resume", "--out", out, "--stateful", "--steps", "4", "--quiet"]) == 0
  capsys.readouterr()
  assert main(["eval", "--out", out]) == 0
  assert capsys.readouterr().out.startswith("step 4:")
