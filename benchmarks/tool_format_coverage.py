"""Which tool-call format each real chat template in llama.cpp's tree writes (issue 21, item 2).

    .venv/bin/python benchmarks/tool_format_coverage.py [--formats hermes,llama3_json,mistral,pythonic]

Every ``*.jinja`` of the templates folder (``make setup`` extracts llama.cpp's ``models/templates`` from the
llama-cpp-python sdist) goes through :func:`tasks.formats.tool_call_formats.detect_tool_format`: a probe call (and
two, where the template takes two) rendered with transformers' renderer and read back by each parser. Prints one
line per template (the format, or why none reads it) and the count. ``--formats`` limits the parsers tried (e.g.
the four of before 2026-12-07) to compare coverage.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.formats.chat_templates import ChatTemplate, render  # noqa: E402
from tasks.formats.tool_call_formats import (  # noqa: E402
    DETECTION_ORDER,
    TOOL_FORMATS,
    detect_tool_format,
    probe_tools,
)
from toolace.chat_template_files import find_templates_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default=",".join(TOOL_FORMATS), help="the formats tried, comma-separated")
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    unknown = [f for f in formats if f not in TOOL_FORMATS]
    if unknown:
        parser.error(f"unknown formats {unknown}: choose from {', '.join(TOOL_FORMATS)}")
    folder = find_templates_dir()
    if folder is None:
        sys.exit("no chat templates: run `make setup` (or `toolace fetch-models --only templates`)")
    tried = tuple(f for f in DETECTION_ORDER if f in formats)
    read = 0
    files = sorted(folder.glob("*.jinja"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for file in files:
            template = ChatTemplate(file.stem, file.read_text(encoding="utf-8"))
            found, why = detect_tool_format(lambda m, g, t=template: render(t, m, probe_tools(), g), "", tried)
            read += found is not None
            print(f"{file.stem:<48} {found or '-':<12} {'' if found else ' '.join(why.split())[:150]}")
    print(f"\n{read} of {len(files)} templates write calls in a format read here ({', '.join(formats)}); "
          f"templates from {(folder / 'SOURCE').read_text().strip() if (folder / 'SOURCE').exists() else folder}")


if __name__ == "__main__":
    main()
