"""The API pool's domain distribution as a PNG bar chart (for the run folder and the Prefect UI)."""

from __future__ import annotations

import base64
import io

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
    try:
        ax.barh(labels or ["(none)"], values or [0], color="#3b73b9")
        ax.set_xlabel("APIs")
        ax.set_title(title)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value}", va="center", fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """An inline image URL: the Prefect UI shows it without access to the run's storage."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
