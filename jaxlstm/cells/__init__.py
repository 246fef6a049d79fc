"""Cell step functions: one concept (one cell) per module."""
