"""The README's "Train on the output" section, run as written: its TRL snippet trains a (tiny) model on a
published dataset through a real chat template, and its LLaMA-Factory ``dataset_info.json`` entry is read
by LLaMA-Factory's own parser, ShareGPT converter and tool formatter (the ``llamafactory`` wheel, installed
without its dependencies by the Makefile: its pins conflict with ours, and these modules need none of them).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from schemas.records import Dialog, Turn
from tasks.dataset.stream import DialogStream
from tests.test_dataset_expectations import BOUNDS, dialog

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(language: str) -> list[str]:
    """The fenced blocks of one language in the README's "Train on the output" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Train on the output", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def clarification(dialog_id: str) -> Dialog:
    """Asks for a missing value first, then calls."""
    base = dialog(dialog_id)
    asked = [Turn(role="user", content="What is the forecast?"),
             Turn(role="assistant", content="For which city?")]
    return base.model_copy(update={"dialog_type": "clarification", "segments": ["clarification"],
                                   "turns": asked + base.turns})


def non_tool(dialog_id: str) -> Dialog:
    turns = [Turn(role="user", content="Thanks, that is all."), Turn(role="assistant", content="You are welcome.")]
    return dialog(dialog_id).model_copy(update={"dialog_type": "non_tool", "segments": ["non_tool"],
                                                "turns": turns, "apis_used": []})


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run's dataset folder, written by the publishing stream from dialogs of every shape."""
    run = tmp_path_factory.mktemp("run")
    dialogs = [dialog("d0"), dialog("d1", "parallel"), clarification("d2"), non_tool("d3"), dialog("d4"),
               dialog("d5", "parallel")]
    with DialogStream(str(run), BOUNDS) as stream:
        stream.write(dialogs, [])
    return run / "dataset"


# ------------------------------------------------------------------------------------------------------ TRL


@pytest.fixture(scope="module")
def tool_capable_base(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test model with Qwen2.5's real chat template (llama.cpp's copy), which renders ``tools=``
    and ``tool_calls`` (SmolLM2's own template renders neither)."""
    from transformers import AutoTokenizer

    from tasks.formats.chat_templates import load_template

    folder = tmp_path_factory.mktemp("tool-base")
    shutil.copytree(tiny_base, folder, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = load_template("qwen2.5")
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("quantization_config", None)  # the GGUF marker of the shared fixture: a plain model here
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow
def test_the_trl_snippet_trains_on_the_published_shards_as_written(published: Path, tool_capable_base: Path,
                                                                   tmp_path: Path) -> None:
    [snippet] = readme_blocks("python")
    assert re.search(r"^DATA = ", snippet, re.MULTILINE) and re.search(r"^BASE = ", snippet, re.MULTILINE)
    script = re.sub(r"^DATA = .*$", f"DATA = {str(published / 'data' / '*.parquet')!r}", snippet, flags=re.M)
    script = re.sub(r"^BASE = .*$", f"BASE = {str(tool_capable_base)!r}", script, flags=re.M)
    (tmp_path / "train.py").write_text(script, encoding="utf-8")
    done = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                               "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train_loss" in done.stdout + done.stderr
    assert (tmp_path / "toolace-sft").is_dir()


def test_trl_renders_calls_once_as_objects_through_the_template(published: Path, tool_capable_base: Path) -> None:
    """What the snippet's trainer tokenizes: every row through the template with its tools, each call's
    arguments written once as a JSON object (never an escaped JSON string)."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    rows = load_dataset("parquet", data_files=str(published / "data" / "*.parquet"), split="train")
    tokenizer = AutoTokenizer.from_pretrained(tool_capable_base)
    by_id = {row["id"]: row for row in rows}
    assert sorted(by_id) == ["d0", "d1", "d2", "d3", "d4", "d5"]
    for row in rows:
        text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
        assert "get_forecast" in text and '\\"' not in text
    parallel = tokenizer.apply_chat_template(by_id["d1"]["messages"], tools=by_id["d1"]["tools"], tokenize=False)
    dialog_part = parallel.split("<|im_start|>user", 1)[1]  # past the system prompt's own format example
    assert dialog_part.count("<tool_call>") == 2
    assert '{"name": "get_forecast", "arguments": {"city": "Porto", "days": 2, "unit": "celsius"}}' in parallel


# ------------------------------------------------------------------------------------------------ LLaMA-Factory


def llamafactory_modules() -> tuple[Any, Any, Any]:
    """LLaMA-Factory's dataset parser, ShareGPT converter and tool formatters, imported without running its
    package ``__init__`` files (they import the training stack: vision, audio, its pinned versions)."""
    spec = importlib.util.find_spec("llamafactory")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llamafactory is not installed: run `make setup` (it installs llamafactory --no-deps)")
    root = spec.submodule_search_locations[0]
    for name, folder in (("llamafactory", root), ("llamafactory.data", f"{root}/data")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [folder]
            sys.modules[name] = package
    from llamafactory.data import converter, parser, tool_utils

    return parser, converter, tool_utils


def test_the_llamafactory_entry_loads_every_row_through_its_own_converter(published: Path) -> None:
    [entry] = readme_blocks("json")
    (published / "dataset_info.json").write_text(entry, encoding="utf-8")
    parser, converter, tool_utils = llamafactory_modules()
    [attr] = parser.get_dataset_list(["toolace"], str(published))
    assert attr.load_from == "file" and attr.formatting == "sharegpt"
    data_args = types.SimpleNamespace(dataset_dir=str(published), media_dir=str(published))
    convert = converter.get_dataset_converter(attr.formatting, attr, data_args)
    rows = [json.loads(line) for line in (published / attr.dataset_name).read_text().splitlines()]
    assert [r["id"] for r in rows] == ["d0", "d1", "d2", "d3", "d4", "d5"]
    qwen = tool_utils.get_tool_utils("qwen")
    for row in rows:
        aligned = convert(row)
        assert aligned["_prompt"] and aligned["_response"], f"LLaMA-Factory skipped row {row['id']}"
        assert aligned["_response"][0]["role"] == "assistant"
        tools = json.loads(aligned["_tools"])
        assert "get_forecast" in qwen.tool_formatter(tools)
        for message in aligned["_prompt"]:
            if message["role"] == "function":
                calls = json.loads(message["content"])
                calls = calls if isinstance(calls, list) else [calls]
                functions = [(c["name"], json.dumps(c["arguments"])) for c in calls]
                rendered = qwen.function_formatter([tool_utils.FunctionCall(*f) for f in functions])
                assert rendered.count("<tool_call>") == len(calls)
    parallel = convert(rows[1])["_prompt"]
    assert [m["role"] for m in parallel] == ["user", "function", "observation"]
    assert len(json.loads(parallel[1]["content"])) == 2
