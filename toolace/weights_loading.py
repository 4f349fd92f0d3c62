"""Loading a model's weights without transformers' "Loading weights" progress bar on the user's stderr.

``from_pretrained`` draws a tqdm bar per model (272 steps for SmolLM2) between the lines of ``toolace run``'s own
progress display. The bar is a process-wide transformers setting: it is turned off for the call and put back as it
was, so a host that wants its bars keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def without_progress_bar() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
