"""The native CPU LSTM loops: ``lstm.cc``, built into ``_lstm*.so`` by setup.py and loaded by
:mod:`jaxlstm._src.kernels.native`. ``include/`` holds XLA's FFI headers (Apache-2.0, from jaxlib 0.10.2), so that
the build needs no jaxlib; a handler built against them runs on that jaxlib and later ones.
"""
