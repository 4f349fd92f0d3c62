"""A run's charts as PNG (for the run folder and the Prefect UI): the API pool's domains, the dialog-type mix
and the distribution of the target model's loss."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to memory only
import matplotlib.pyplot as plt  # noqa: E402

MAX_BARS = 40


def domain_chart_png(counts: dict[str, int], title: str = "APIs per domain") -> bytes:
    """A horizontal bar chart, biggest domain first; domains past the 40th are summed into 'other'."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(items) > MAX_BARS:
        rest = sum(v for _, v in items[MAX_BARS - 1:])
        items = [*items[: MAX_BARS - 1], (f"other ({len(items) - MAX_BARS + 1} domains)", rest)]
    labels = [k for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.28 * len(items) + 1.0)), dpi=100)
    ax.barh(labels or ["(none)"], values or [0], color="#3b73b9")
    ax.set_xlabel("APIs")
    ax.set_title(title)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value}", va="center", fontsize=8)
    return _png(fig)


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed even when drawing failed."""
    try:
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def dialog_type_chart_png(counts: dict[str, int], wanted: dict[str, float], title: str) -> bytes:
    """Accepted dialogs per type beside the share the dialog mix asked for."""
    kinds = sorted(set(counts) | {k for k, v in wanted.items() if v > 0})
    total = sum(counts.values()) or 1
    weight = sum(wanted.values()) or 1
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    xs = range(len(kinds))
    ax.bar([x - 0.2 for x in xs], [counts.get(k, 0) / total for k in kinds], width=0.4, label="published",
           color="#3b73b9")
    ax.bar([x + 0.2 for x in xs], [wanted.get(k, 0) / weight for k in kinds], width=0.4, label="asked for",
           color="#b0b0b0")
    ax.set_xticks(list(xs), kinds or ["(none)"], rotation=20)
    ax.set_ylabel("share of dialogs")
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def loss_histogram_png(losses: list[float], bounds: tuple[float, float] | None, title: str) -> bytes:
    """Histogram of the complexity loss, with the self-guidance bounds when there are any."""
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    if losses:
        ax.hist(losses, bins=min(30, max(5, len(losses) // 3)), color="#3b73b9")
    else:
        ax.text(0.5, 0.5, "no loss computed (no target model)", ha="center", va="center", transform=ax.transAxes)
    if bounds:
        for value, label in zip(bounds, ("lower bound", "upper bound"), strict=True):
            ax.axvline(value, color="#c0392b", linestyle="--", label=f"{label} {value:.2f}")
        ax.legend()
    ax.set_xlabel("mean NLL over assistant tokens")
    ax.set_ylabel("dialogs")
    ax.set_title(title)
    return _png(fig)


def png_data_uri(png: bytes) -> str:
    """An inline image URL: the Prefect UI shows it without access to the run's storage."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
