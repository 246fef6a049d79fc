"""The native CPU LSTM kernel against the reference scan in float64: outputs, final states and every gradient.

The kernel runs float32 only, so its float32 results are held to the float64 reference kernel on the same
values, to float32 rounding. Tests that run the library skip where it is not built; the fallback tests run
everywhere.
"""

import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm._src.kernels import fused, native
from tests.helpers import (
  as_float32,
  assert_trees_rel_close,
  check_against_reference,
  forward_modes,
  native_settings,
  normal,
  random_params,
)

built = pytest.mark.skipif(native.load_error() is not None, reason=f"{native.load_error()}")

B, T, I, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])
MASK = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]], bool)
TOL = 3e-5  # float32 against float64, relative to each array's largest entry


@pytest.fixture(autouse=True)
def native_training(monkeypatch):
  """Every size trains on the native loops here, so that the small cases test native_backward whatever the
  default of native.TRAIN_MIN_HIDDEN; a threshold above zero has its own test."""
  monkeypatch.setattr(native, "TRAIN_MIN_HIDDEN", 1)


def setup(*, peephole=False, batch=(B,), t=T, i=I, h=H, seed=0):
  """float64 params, inputs and state; the native side runs them cast to float32."""
  params = random_params(jaxlstm.lstm_init, i, h, dtype=jnp.float64, peephole=peephole, seed=seed)
  xs = normal((*batch, t, i), jnp.float64, seed=seed + 1)
  state = jaxlstm.LSTMState(
    normal((*batch, h), jnp.float64, seed=seed + 2, scale=0.5),
    normal((*batch, h), jnp.float64, seed=seed + 3, scale=0.5),
  )
  return params, xs, state


def assert_close(got, want, tol=TOL):
  assert_trees_rel_close(got, want, tol)


def check(params, xs, state, tol=TOL, **kw):
  check_against_reference("native", params, xs, state, tol, **kw)


CASES = {
  "plain": {},
  "lengths": {"lengths": LENGTHS},
  "mask": {"mask": MASK},
  "reverse": {"reverse": True},
  "lengths_reverse": {"lengths": LENGTHS, "reverse": True},
}


@built
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case, peephole):
  check(*setup(peephole=peephole), **CASES[case])


@built
@pytest.mark.parametrize("t, batch, h", [(1, (3,), 4), (4, (1,), 4), (3, (2,), 1), (1, (1,), 1), (3, (0,), 4)])
def test_size_one(t, batch, h):
  check(*setup(t=t, batch=batch, h=h))


@built
@pytest.mark.parametrize("threads", [2, 3])
def test_threads_split_hidden_units(threads):
  """With the units split over workers (H = 37 does not divide evenly), and lengths, peepholes and reverse."""
  native.set_threads(threads)
  try:
    params, xs, state = setup(peephole=True, batch=(4,), t=6, i=3, h=37)
    check(params, xs, state, lengths=np.array([6, 3, 0, 1]), reverse=True)
  finally:
    native.set_threads(0)


def cpu_flags():
  """The x86 CPU's feature flags from /proc/cpuinfo, or an empty set (not Linux, not x86-64)."""
  if platform.machine() not in ("x86_64", "AMD64"):
    return set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return set()


@built
def test_panel_kernel_runs_where_the_cpu_has_avx2():
  """The per-step GEMM's dispatch (panels.h): never in mode 0; by default on AVX2+FMA without AVX-512F; in mode 2
  on any AVX2+FMA CPU."""
  flags = cpu_flags()
  avx2 = {"avx2", "fma"} <= flags
  for mode, want in [(0, False), (1, avx2 and "avx512f" not in flags), (2, avx2)]:
    with native_settings(native, panels=mode):
      assert native.panels() == want, (mode, sorted(flags & {"avx2", "fma", "avx512f"}))
  with pytest.raises(ValueError, match="mode must be 0, 1 or 2, got 3"):
    native.set_panels(3)


@built
@pytest.mark.parametrize("panels", [0, 2])
@pytest.mark.parametrize("threads, batch, h", [(1, 7, 16), (2, 13, 37), (3, 1, 5)])
def test_panel_and_sgemm_gemms(panels, threads, batch, h):
  """Both per-step GEMMs: 7 and 13 rows are blocks of 6 and a remainder; H = 37 on two tasks gives forward slices
  of 72 and 76 columns and backward ones of 18 and 19, so the last 16-column panel of each is partial; H = 5 on
  three tasks, slices of 1 or 2 units."""
  with native_settings(native, threads=threads, panels=panels):
    params, xs, state = setup(peephole=True, batch=(batch,), t=4, i=3, h=h)
    check(params, xs, state, lengths=np.arange(batch) % 5, reverse=True)


@built
@pytest.mark.parametrize("threads", [1, 2, 8])
def test_chunked_projection_and_more_tasks_than_cores(threads):
  """B = 32, H = 128: the input projection runs in chunks of 4 (one task) or 8 steps (two), so T = 20 ends on a
  partial chunk; eight tasks on this machine's fewer cores make threads take over each other's tasks. The
  gradients sum 640 rows of float32 products: native is up to 1.8e-4 off float64 here (the fused kernel in float32
  7.5e-5), so the tolerance is wider than the small cases' 3e-5."""
  native.set_threads(threads)
  try:
    params, xs, state = setup(peephole=True, batch=(32,), t=20, i=5, h=128)
    check(params, xs, state, tol=3e-4, lengths=np.arange(32) % 21)
  finally:
    native.set_threads(0)


@built
@pytest.mark.parametrize("h, train_target", [(4, None), (256, "jaxlstm_lstm_backward")])
def test_small_layers_train_on_the_xla_loops(monkeypatch, h, train_target):
  """With TRAIN_MIN_HIDDEN at 256 (its value before the huge-page advice), a layer below it runs its forward
  natively and trains on the fused kernel's XLA loops; from it on, training runs native_backward. Both match the
  reference."""
  monkeypatch.setattr(native, "TRAIN_MIN_HIDDEN", 256)
  params, xs, state = setup(h=h, t=3)
  p32, x32, s32 = as_float32((params, xs, state))

  def targets(fn, *args):
    text = jax.jit(fn).lower(*args).as_text()
    names = ("jaxlstm_lstm_forward_infer", "jaxlstm_lstm_forward_train", "jaxlstm_lstm_backward")
    return {t for t in names if t in text}

  assert targets(lambda x: jaxlstm.lstm(p32, x, s32, impl="native")[1], x32) == {"jaxlstm_lstm_forward_infer"}
  grad = jax.grad(lambda p: jnp.sum(jaxlstm.lstm(p, x32, s32, impl="native")[1]))
  assert targets(grad, p32) == ({"jaxlstm_lstm_forward_train", train_target} if train_target else set())
  check(params, xs, state, tol=1e-4, lengths=np.array([3, 1, 0]))


@built
def test_default_trains_small_layers_natively(monkeypatch):
  """At the defaults, a layer of 4 units trains on native_backward."""
  monkeypatch.undo()
  assert native.TRAIN_MIN_HIDDEN == 0
  p32, x32, s32 = as_float32(setup(t=3))
  grad = jax.grad(lambda p: jnp.sum(jaxlstm.lstm(p, x32, s32)[1]))
  assert "jaxlstm_lstm_backward" in jax.jit(grad).lower(p32).as_text()


@built
def test_huge_page_advice_changes_no_result():
  """A forward whose outputs are over 4 MiB (B·T·4H floats) is advised; with the advice off it gives the same
  bits, and set_huge_pages returns the previous setting."""
  params, xs, state = as_float32(setup(batch=(64,), t=64, i=8, h=128))
  run = jax.jit(lambda x: jaxlstm.lstm(params, x, state, impl="native"))
  grad = jax.jit(jax.grad(lambda p: jnp.sum(jaxlstm.lstm(p, xs, state, impl="native")[1] ** 2)))
  on = run(xs), grad(params)
  assert native.set_huge_pages(False) is True
  try:
    off = run(xs), grad(params)
    assert native.set_huge_pages(False) is False
  finally:
    native.set_huge_pages(True)
  for a, b in zip(jax.tree.leaves(on), jax.tree.leaves(off), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@built
def test_auto_order(monkeypatch):
  """native can run float32 LSTMs on CPU; impl="auto" takes it for plain LSTMs of any size, and says why it
  passes it over for peephole ones."""
  monkeypatch.setattr(native, "TRAIN_MIN_HIDDEN", 256)  # the default, which explain's note names
  params, xs, _ = as_float32(setup())
  choice = jaxlstm.explain(params, xs)
  assert choice.reasons["native"] is None and choice.kernel == "native"
  assert "native: chosen (the forward loop; trained, below 256 hidden units (H=4), the fused kernel's" in str(choice)
  peep = as_float32(setup(peephole=True)[0])
  assert "passes it over: its peephole path is not measured" in str(jaxlstm.explain(peep, xs))
  assert native.KERNEL.rank < fused.KERNEL.rank
  xs = jnp.ones((2, 3, 4), jnp.float32)
  cases = ((256, False, "native"), (512, False, "native"), (8, False, "native"), (256, True, "fused"))
  for H, peephole, want in cases:
    p = jaxlstm.lstm_init(jax.random.key(0), 4, H, peephole=peephole)
    assert jaxlstm.explain(p, xs).kernel == want, (H, peephole)
  bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), jaxlstm.lstm_init(jax.random.key(0), 4, 256))
  assert jaxlstm.explain(bf16, xs.astype(jnp.bfloat16)).kernel == "fused"


@built
def test_vmap_and_jit_match_a_loop():
  params, xs, state = as_float32(setup(batch=(2, B)))

  def one(x, s):
    return jaxlstm.lstm(params, x, s, lengths=LENGTHS, impl="native")

  got = jax.jit(jax.vmap(one))(xs, state)
  want = [one(xs[k], jax.tree.map(lambda a, k=k: a[k], state)) for k in range(2)]
  assert_close(got, jax.tree.map(lambda *a: jnp.stack(a), *want), tol=1e-6)
  # Per-example weights too: vmap over params.
  params2 = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
  got = jax.vmap(lambda p, x: jaxlstm.lstm(p, x, impl="native")[1])(params2, xs)
  want = jnp.stack(
    [jaxlstm.lstm(jax.tree.map(lambda a, k=k: a[k], params2), xs[k], impl="native")[1] for k in range(2)]
  )
  assert_close(got, want, tol=1e-6)

  # grad through vmap: the backward loop is batched too.
  def grad(impl):
    def loss(p):
      return jnp.sum(jax.vmap(lambda x: jaxlstm.lstm(p, x, lengths=LENGTHS, impl=impl)[1])(xs) ** 2)

    return jax.jit(jax.grad(loss))(params)

  assert_close(grad("native"), grad("reference"), tol=1e-5)


@built
@pytest.mark.parametrize("peephole", [False, True])
def test_forward_mode_matches_reference(peephole):
  # jvp and jacfwd run the fused kernel's tangent loop on the native forward's saved factors; hessian
  # differentiates the native calls through their XLA equivalents.
  params, xs, _ = as_float32(setup(peephole=peephole))

  def f(impl):
    return lambda x: jnp.sum(jaxlstm.lstm(params, x, lengths=LENGTHS, impl=impl)[1] ** 2, axis=(0, 2))

  t = normal(xs.shape, jnp.float32, seed=7)

  assert_close(forward_modes(f("native"), xs, t), forward_modes(f("reference"), xs, t), tol=1e-5)


@built
def test_stack_and_bidirectional_match_reference():
  params = random_params(jaxlstm.stack_init, I, H, 2, dtype=jnp.float64, bidirectional=True)
  xs = normal((B, T, I), jnp.float64, seed=1)

  def run(impl, params, xs):
    def loss(params, xs):
      _, hs = jaxlstm.stack(params, xs, lengths=LENGTHS, impl=impl)
      return jnp.sum(jnp.sin(hs)), hs

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, xs)

  assert_close(run("native", *as_float32((params, xs))), run("reference", params, xs))


def call(params, **kw):
  kw = {"lengths": False, "mask": False, "resets": False, "reverse": False, "time_major": False, "remat": None, **kw}
  return jaxlstm.LayerCall(cell=jaxlstm.get_cell(kw.pop("cell", "lstm")), params=params, **kw)


def test_why_not_names_what_it_lacks():
  p32 = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
  assert native.why_not(call(f64(p32))) == ("it runs float32 params only; got float64; use impl='fused'")
  assert (
    native.why_not(call(jaxlstm.gru_init(jax.random.key(0), 3, 5), cell="gru")) == "it runs LSTM layers only, not gru"
  )
  assert "resets" in native.why_not(call(p32, resets=True))
  assert "remat" in native.why_not(call(p32, remat=4))
  assert "layer_norm" in native.why_not(call(jaxlstm.lstm_init(jax.random.key(0), 3, 5, layer_norm=True)))


def f64(tree):
  return jax.tree.map(lambda a: a.astype(jnp.float64), tree)


def test_without_the_library_auto_falls_back_and_native_raises(monkeypatch):
  reason = "the native library is not built (a test's stand-in reason)"
  monkeypatch.setattr(native, "_load", lambda: (None, reason))
  params = jaxlstm.lstm_init(jax.random.key(0), 3, 256)  # where auto would take native if it were built
  xs = jnp.ones((2, 7, 3), jnp.float32)
  choice = jaxlstm.explain(params, xs)
  assert choice.kernel == "fused"
  assert choice.reasons["native"] == reason
  assert reason in str(choice)
  with pytest.raises(ValueError, match=r"impl='native' cannot run this layer: the native library is not built"):
    jaxlstm.lstm(params, xs, impl="native")
  _, hs = jaxlstm.lstm(params, xs)  # impl="auto" runs as before
  assert hs.shape == (2, 7, 256)
