"""The fast LSTM layer (placeholder: every call takes the reference scan until it lands)."""

from __future__ import annotations


def supports(params, *, resets=None) -> bool:
  """Whether the fused path handles this layer call."""
  return False


def lstm_fused(params, xs, state, *, lengths=None, mask=None, reverse=False, time_major=False, unroll=1):
  raise NotImplementedError
