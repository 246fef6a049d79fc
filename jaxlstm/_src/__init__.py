"""The implementation of jaxlstm's core: cells, kernels, the layer shell, layers and stacks.

Nothing here is public API: :mod:`jaxlstm` and :mod:`jaxlstm.kernels` re-export the public names one by
one, and code outside the package should import from there.
"""
