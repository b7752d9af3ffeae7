"""Figures as PNG files, drawn headless and written atomically.

Figures use matplotlib's Agg canvas directly (no pyplot), so they work headless and do
not touch global matplotlib state that other code may rely on. Training code never
imports this module: a stage's figures are drawn once its numbers are written.
"""

from __future__ import annotations

import io
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crs.io import write_bytes_atomic


def save_figure_atomic(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Render ``fig`` as PNG and move it into place atomically."""
    FigureCanvasAgg(fig)  # attach the Agg canvas: headless, no pyplot state
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())
