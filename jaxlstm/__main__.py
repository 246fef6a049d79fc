"""``python -m jaxlstm``."""

import sys

from jaxlstm.cli import main

if __name__ == "__main__":
  sys.exit(main())
