"""Writing a training history (dict of lists) as CSV or JSON, and plotting it as a PNG."""
from __future__ import annotations

import csv
import io
import json
import math
import os

from ..checkpoint import atomic_write_bytes


def _clean(v):
    if v is None:
        return None
    v = float(v) if not isinstance(v, int) else v
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_history(history: dict, path) -> None:
    """``.csv``: one row per epoch, a column per key; ``.json``: the dict of lists."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        data = json.dumps({k: [_clean(v) for v in vals] for k, vals in history.items()}, indent=1)
        atomic_write_bytes(path, data.encode())
    elif ext == ".csv":
        keys = list(history)
        n = max((len(v) for v in history.values()), default=0)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(keys)
        for i in range(n):
            row = []
            for k in keys:
                v = history[k][i] if i < len(history[k]) else None
                row.append("" if v is None else repr(v) if isinstance(v, float) else v)
            w.writerow(row)
        atomic_write_bytes(path, buf.getvalue().encode())
    else:
        raise ValueError(f"history_path must end in .csv or .json, got {path!r}")


def plot_history(history: dict, path, title: str | None = None) -> None:
    """Loss and accuracy curves (train and validation) against the epoch, as a PNG.

    Uses matplotlib's Agg canvas directly, so no display and no global backend change."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("plotting the history needs matplotlib: pip install matplotlib") from exc
    epochs = history.get("epoch") or list(range(1, len(history.get("loss", [])) + 1))
    has_acc = any(v is not None for v in history.get("accuracy", [])) or \
        any(v is not None for v in history.get("val_accuracy", []))
    fig = Figure(figsize=(10 if has_acc else 5.5, 4), dpi=100)
    FigureCanvasAgg(fig)
    panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if has_acc else [])
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k, style in ((key, "-"), (f"val_{key}", "--")):
            vals = history.get(k)
            if vals and any(v is not None for v in vals):
                ax.plot(epochs[:len(vals)], [math.nan if v is None else v for v in vals], style, marker="o",
                        markersize=3, label="train" if k == key else "validation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
