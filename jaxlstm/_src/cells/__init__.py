"""The cells, one file each, and the registry that the rest of the library reads.

A new cell is one module that builds a :class:`~jaxlstm.Cell` record plus one
:func:`~jaxlstm.register_cell` line here (or in the user's own code).
"""

from jaxlstm._src.cells import convlstm, gru, lstm, mingru, minlstm, rnn, slstm
from jaxlstm._src.cells.registry import (
  Cell,
  Recurrence,
  cell_names,
  cell_of,
  get_cell,
  is_cell_params,
  register_cell,
  static_fields,
  unregister_cell,
)

register_cell(lstm.CELL)
register_cell(gru.CELL)
register_cell(rnn.CELL)
register_cell(mingru.CELL)
register_cell(minlstm.CELL)
register_cell(slstm.CELL)
register_cell(convlstm.CELL_1D)
register_cell(convlstm.CELL_2D)

__all__ = [
  "Cell",
  "Recurrence",
  "cell_names",
  "cell_of",
  "get_cell",
  "is_cell_params",
  "register_cell",
  "static_fields",
  "unregister_cell",
]
