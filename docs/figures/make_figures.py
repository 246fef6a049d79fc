"""Draws the missing-data figures of the Concepts page: ``python docs/figures/make_figures.py [OUT_DIR]``.

Writes ``lengths.svg``, ``mask.svg`` and ``resets.svg`` beside this file, or into ``OUT_DIR`` (the committed
ones are beside it, so the docs build needs no matplotlib). Each shows three sequences of T = 8 steps as rows of
boxes, what the layer computes at each step, and where the final state comes from.
"""

import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
T = 8
VALID, SKIPPED = "#4C72B0", "#D9D9D9"
SEGMENTS = ["#4C72B0", "#DD8452", "#55A868"]
plt.rcParams.update({"font.size": 10, "svg.fonttype": "none", "svg.hashsalt": "jaxlstm"})


def grid(ax, rows, title):
  """rows: per row (label, [(colour, text) per step], final step or None)."""
  for r, (label, steps, final) in enumerate(rows):
    y = len(rows) - 1 - r
    ax.text(-0.4, y + 0.4, label, ha="right", va="center", family="monospace")
    for t, (colour, text) in enumerate(steps):
      ax.add_patch(Rectangle((t, y), 0.9, 0.8, facecolor=colour, edgecolor="white"))
      ax.text(
        t + 0.45,
        y + 0.4,
        text,
        ha="center",
        va="center",
        color="white" if colour != SKIPPED else "#555555",
        family="monospace",
      )
    if final is not None:  # the step the final state comes from, outlined, and a line to the state
      ax.add_patch(Rectangle((final, y), 0.9, 0.8, facecolor="none", edgecolor="black", lw=2.2))
      ax.plot([final + 0.9, T + 0.1], [y + 0.4, y + 0.4], color="black", lw=1, ls=(0, (2, 2)), zorder=0)
      ax.add_patch(Rectangle((T + 0.1, y + 0.1), 0.7, 0.6, facecolor="white", edgecolor="black"))
      ax.text(T + 0.45, y + 0.4, "s", ha="center", va="center", style="italic")
  for t in range(T):
    ax.text(t + 0.45, len(rows) + 0.1, f"t={t}", ha="center", va="bottom", fontsize=8, color="#555555")
  ax.text(T + 0.45, len(rows) + 0.1, "final", ha="center", va="bottom", fontsize=8, color="#555555")
  ax.set_title(title, loc="left", fontsize=11)
  ax.set_xlim(-3.2, T + 1)
  ax.set_ylim(-0.3, len(rows) + 0.9)
  ax.set_aspect("equal")
  ax.axis("off")


def save(fig, name):
  fig.savefig(OUT / name, bbox_inches="tight", metadata={"Date": None})
  plt.close(fig)


def lengths():
  rows = []
  for n in (8, 5, 2):
    steps = [(VALID, "h") if t < n else (SKIPPED, "0") for t in range(T)]
    rows.append((f"lengths[b]={n}", steps, n - 1))
  fig, ax = plt.subplots(figsize=(7, 2.4))
  grid(
    ax,
    rows,
    "lengths=[8, 5, 2]: steps past a row's length are skipped, outputs there are 0,\n"
    "and the final state s is the state after the row's last valid step",
  )
  save(fig, "lengths.svg")


def mask():
  masks = ["TTFTTFFT", "TTTTTTTT", "FFTTTTFF"]
  rows = []
  for m in masks:
    steps = [(VALID, "h") if c == "T" else (SKIPPED, "0") for c in m]
    rows.append((f"mask[b]={m}", steps, max(i for i, c in enumerate(m) if c == "T")))
  fig, ax = plt.subplots(figsize=(7, 2.4))
  grid(
    ax,
    rows,
    "mask (T = True, F = False): a False step keeps the previous state and outputs 0,\n"
    "anywhere in the sequence; the final state is the state after the last True step",
  )
  save(fig, "mask.svg")


def resets():
  flags = ["T..T..T.", "T.......", "T....T.."]
  rows = []
  for f in flags:
    seg, steps = -1, []
    for c in f:
      seg += c == "T"
      steps.append((SEGMENTS[seg % 3], "r" if c == "T" else "h"))
    rows.append((f"resets[b]={f.replace('.', 'F')}", steps, T - 1))
  fig, ax = plt.subplots(figsize=(7, 2.4))
  grid(
    ax,
    rows,
    "resets: at a True step (r) the state goes back to the initial state before the step;\n"
    "each colour is one segment (an episode of a packed batch)",
  )
  save(fig, "resets.svg")


if __name__ == "__main__":
  OUT.mkdir(parents=True, exist_ok=True)
  lengths()
  mask()
  resets()
