"""The published rows through the real chat templates (tasks.formats.chat_templates): llama.cpp's copies of the model
families' templates, which `make setup` extracts into the virtual environment, rendered with transformers'
own renderer; the gate that fails a dataset a listed template cannot render."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from schemas.records import Dialog, ToolCall, Turn
from tasks.dataset.card import chat_row, template_section
from tasks.formats.call_format import chat_messages, with_published_ids
from tasks.formats.chat_templates import (
    ChatTemplate,
    RowSample,
    can_render_tools,
    load_family,
    render,
    render_problem,
    unsupported_reason,
)
from tasks.formats.dataset_formats import read_samples
from tasks.formats.type_dialects import parameters_schema
from tasks.verification.expectations import check_records, sample_records
from tasks.verification.template_gate import TargetTemplateError, TemplateGate
from tests.test_dataset_expectations import ACCEPTANCE, ALERTS, BOUNDS, FORECAST, GOOD_RESULT, dialog, rows_of
from toolace.chat_template_files import (
    DEFAULT_FAMILIES,
    FAMILIES,
    PARALLEL_CALLS,
    TemplatesMissingError,
    extract_chat_templates,
    templates_dir,
)

SAMPLE = Path(__file__).parent / "data" / "toolace-sample.jsonl"
JSON_ARGUMENT_FAMILIES = ("qwen2.5", "qwen3", "llama3.1", "llama3.2", "llama3.3", "hermes3", "mistral-nemo",
                          "mistral-small3", "deepseek-v3", "granite4")  # they write the arguments with tojson


@pytest.fixture(scope="module")
def folder() -> Path:
    """The templates `make setup` extracted (CI runs it): their absence is a failure, not a skip."""
    return templates_dir(None, DEFAULT_FAMILIES)


def multi_turn_dialog() -> Dialog:
    """Clarification, a dependent pair of calls, a text answer, then a second request: the shapes a run makes."""
    turns = [Turn(role="user", content="What's the weather?"),
             Turn(role="assistant", content="For which city, and how many days ahead?"),
             Turn(role="user", content="Lisbon, 3 days. Any alerts too?"),
             Turn(role="assistant", tool_calls=[ToolCall(id="call_0", name="get_forecast",
                                                         arguments={"city": "Lisbon", "days": 3})]),
             Turn(role="tool", tool_call_id="call_0", name="get_forecast", content=GOOD_RESULT),
             Turn(role="assistant", tool_calls=[ToolCall(id="call_0", name="get_alerts",
                                                         arguments={"city": "Lisbon", "days": 1})]),
             Turn(role="tool", tool_call_id="call_0", name="get_alerts", content='{"summary": "none"}'),
             Turn(role="assistant", content="Sunny, 21 degrees, and no alerts."),
             Turn(role="user", content="Thanks!"),
             Turn(role="assistant", content="You're welcome.")]
    return Dialog(dialog_id="m0", dialog_type="multi_turn", domain="Weather", tools=[FORECAST, ALERTS], turns=turns,
                  segments=["clarification", "dependent", "non_tool"], apis_used=["get_forecast", "get_alerts"])


def published_rows() -> list[dict[str, Any]]:
    dialogs = [dialog("d0"), dialog("d1", "parallel"), multi_turn_dialog()]
    rows = [{"id": d.dialog_id, **chat_row(d)} for d in dialogs]
    for sample in read_samples(str(SAMPLE), "auto"):  # 92 real ToolACE dialogs, 12 with parallel calls
        tools = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                   "parameters": parameters_schema(t.parameters)}}
                 for t in sample.tools]
        rows.append({"id": sample.id, "messages": chat_messages(with_published_ids(sample.id, sample.turns)),
                     "tools": tools})
    return rows


def old_format(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages as the shards held them before: every key on every message, JSON-string arguments."""
    return [{"role": m["role"], "content": None if m.get("tool_calls") else m["content"],
             "tool_call_id": m.get("tool_call_id"),
             "tool_calls": [{**c, "id": f"call_{i}", "function": {**c["function"],
                                                                  "arguments": json.dumps(c["function"]["arguments"])}}
                            for i, c in enumerate(m.get("tool_calls") or [])]}
            for m in row["messages"]]


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_every_published_row_renders_through_the_family(folder: Path, family: str) -> None:
    template = load_family(family, folder)
    rows = published_rows()
    unsupported = 0
    for row in rows:
        reason = unsupported_reason(template, row["messages"])
        if reason is not None:
            unsupported += 1
            continue
        assert render_problem(template, row["messages"], row["tools"]) is None, (family, row["id"])
    if family.startswith("llama3"):  # several calls in one message: Llama 3.x cannot take it at all
        assert unsupported == 13 and PARALLEL_CALLS in dict(FAMILIES[family].unsupported)
        with pytest.raises(Exception, match="only supports single tool-calls"):
            render(template, rows[1]["messages"], rows[1]["tools"])
    else:
        assert unsupported == 0


@pytest.mark.parametrize("family", JSON_ARGUMENT_FAMILIES)
def test_arguments_are_rendered_as_an_object_once(folder: Path, family: str) -> None:
    row = {"id": "m0", **chat_row(multi_turn_dialog())}
    text = render(load_family(family, folder), row["messages"], row["tools"])
    assert text.count('{"city": "Lisbon", "days": 3}') == 1
    assert '\\"city\\"' not in text


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_a_tool_result_that_echoes_the_arguments_is_no_false_alarm(folder: Path, family: str) -> None:
    """Llama 3.x writes a tool result's text through ``tojson``: a result holding the same JSON as the call's
    arguments then appears escaped, but the call itself is rendered right (seen in an embedded-model run)."""
    row = {"id": "e0", **chat_row(dialog("e0"))}
    arguments = row["messages"][1]["tool_calls"][0]["function"]["arguments"]
    row["messages"][2] = {**row["messages"][2], "content": json.dumps(arguments)}
    assert render_problem(load_family(family, folder), row["messages"], row["tools"]) is None


def test_xml_and_gemma_families_render_each_argument(folder: Path) -> None:
    row = {"id": "m0", **chat_row(multi_turn_dialog())}
    qwen35 = render(load_family("qwen3.5", folder), row["messages"], row["tools"])
    assert "<function=get_forecast>" in qwen35 and "<parameter=city>\nLisbon\n</parameter>" in qwen35
    gemma = render(load_family("gemma4", folder), row["messages"], row["tools"])
    assert "call:get_forecast{" in gemma and "Lisbon" in gemma and '\\"city\\"' not in gemma


def test_the_old_shard_format_fails_as_the_issue_reported(folder: Path) -> None:
    row = {"id": "d0", **chat_row(dialog("d0"))}
    old = old_format(row)
    assert "only supports single tool-calls" in (render_problem(load_family("llama3.1", folder), old, row["tools"])
                                                 or "")
    assert "mapping" in (render_problem(load_family("qwen3.5", folder), old, row["tools"]) or "")
    assert "Tool call IDs" in (render_problem(load_family("mistral-nemo", folder), old, row["tools"]) or "")
    string_arguments = [m if not m.get("tool_calls") else {**m, "content": "", "tool_calls": [
        {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
        for c in m["tool_calls"]]} for m in row["messages"]]
    assert "JSON string" in (render_problem(load_family("qwen2.5", folder), string_arguments, row["tools"]) or "")


def test_render_is_what_a_tokenizer_renders(folder: Path, tmp_path: Path) -> None:
    template = load_family("qwen2.5", folder)
    tokenizer = tiny_tokenizer(tmp_path, template.text)
    row = {"id": "d1", **chat_row(dialog("d1", "parallel"))}
    expected = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
    assert render(template, row["messages"], row["tools"]) == expected


# --------------------------------------------------------------------------------------------- the gate


def tiny_tokenizer(folder: Path, chat_template: str) -> Any:
    """A word-level tokenizer with ``chat_template``, saved to ``folder``: a local target model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|endoftext|>": 1, "<|im_end|>": 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return tokenizer


def gate_rows(rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return list(enumerate(rows))


def test_gate_passes_published_rows_and_reports_llama_parallel_calls(folder: Path) -> None:
    dialogs = [dialog("d0"), dialog("d1", "parallel"), multi_turn_dialog()]
    records, problems = sample_records(rows_of(dialogs), BOUNDS)
    gate = TemplateGate(target_model=None)
    rows = [{"id": d.dialog_id, **chat_row(d)} for d in dialogs]
    outcome = check_records(records, problems, ACCEPTANCE, BOUNDS, None, chat_rows=gate_rows(rows), templates=gate)
    assert outcome.result("gx_chat_templates_v1").success, outcome.result("gx_chat_templates_v1").details
    report = outcome.chat_templates
    assert report is not None and report.rows_checked == 3 and set(report.families) == set(DEFAULT_FAMILIES)
    assert report.families["llama3.1"].unsupported == {PARALLEL_CALLS: 1}
    assert report.families["llama3.1"].rendered == 2 and report.families["qwen3"].rendered == 3
    section = template_section(report)
    assert "| llama3.3 |" in section and "1: several tool calls in one assistant message" in section


def test_gate_fails_a_row_a_template_cannot_render_naming_family_row_and_error(folder: Path) -> None:
    dialogs = [dialog("d0"), dialog("d1")]
    records, problems = sample_records(rows_of(dialogs), BOUNDS)
    rows = [{"id": d.dialog_id, **chat_row(d)} for d in dialogs]
    rows[1]["messages"][1]["tool_calls"][0]["id"] = "call_0"  # not Mistral's 9 characters
    gate = TemplateGate(families=["qwen3", "mistral-nemo"], target_model=None)
    outcome = check_records(records, problems, ACCEPTANCE, BOUNDS, None, chat_rows=gate_rows(rows), templates=gate)
    result = outcome.result("gx_chat_templates_v1")
    assert not outcome.success and not result.success and result.observed == 1
    assert list(result.details["template_problems"]) == ["d1"]
    assert "mistral-nemo: TemplateError: Tool call IDs should be alphanumeric strings with length 9!" in \
        result.details["template_problems"]["d1"]
    assert outcome.chat_templates is not None and outcome.chat_templates.families["mistral-nemo"].failed == 1
    assert outcome.chat_templates.families["qwen3"].failed == 0


def test_missing_templates_folder_is_one_line_naming_the_setup_step(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TemplatesMissingError, match=r"make setup.*fetch-models --only templates") as caught:
        TemplateGate(templates_dir=str(tmp_path / "nowhere"), target_model=None).templates()
    assert "\n" not in str(caught.value)
    (tmp_path / "some.jinja").write_text("x")
    with pytest.raises(TemplatesMissingError, match="lacks qwen3"):
        templates_dir(str(tmp_path), ["qwen3"])


def test_default_target_without_tools_is_skipped_with_a_note(folder: Path) -> None:
    gate = TemplateGate(families=["qwen3"], target_model="smollm2")  # the default: not chosen by the user
    templates, note, _ = gate.templates()
    assert [t.name for t in templates] == ["qwen3"]
    assert note is not None and "smollm2" in note and "tools" in note


def test_chosen_target_without_tools_is_an_error_naming_model_and_fix(tmp_path: Path) -> None:
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    tiny_tokenizer(tmp_path, chatml)
    gate = TemplateGate(families=[], target_model=str(tmp_path), target_explicit=True)
    with pytest.raises(TargetTemplateError, match=rf"target model {tmp_path}: .*tools.*--target-model none"):
        gate.templates()


def test_chosen_target_with_a_tool_template_is_checked(folder: Path, tmp_path: Path) -> None:
    tiny_tokenizer(tmp_path, load_family("qwen2.5", folder).text)
    gate = TemplateGate(families=[], target_model=str(tmp_path), target_explicit=True)
    templates, note, _ = gate.templates()
    assert note is None and [t.name for t in templates] == [f"target {tmp_path}"]
    rows = [{"id": "d0", **chat_row(dialog("d0"))}]
    report, problems = gate.check(gate_rows(rows), published=1)
    assert problems == {} and report.families[f"target {tmp_path}"].rendered == 1


def test_can_render_tools() -> None:
    assert can_render_tools(ChatTemplate("plain", "{% for m in messages %}{{ m.content }}{% endfor %}")) is not None
    raising = ChatTemplate("raising", "{{ raise_exception('no tools here') }}")
    assert "no tools here" in (can_render_tools(raising) or "")


def test_row_sample_is_seeded_and_bounded() -> None:
    first, second = RowSample(5, seed=1), RowSample(5, seed=1)
    for i in range(100):
        first.add(i, {"id": i})
        second.add(i, {"id": i})
    assert len(first.rows) == 5 and first.sorted() == second.sorted() and first.seen == 100
    none = RowSample(0)
    none.add(0, {})
    assert none.rows == []


def test_extract_takes_only_the_templates(tmp_path: Path) -> None:
    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in (("llama_cpp_python-9.9.9/vendor/llama.cpp/models/templates/A-B.jinja", b"{{ x }}"),
                           ("llama_cpp_python-9.9.9/vendor/llama.cpp/models/templates/README.md", b"no"),
                           ("llama_cpp_python-9.9.9/setup.py", b"no")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out = extract_chat_templates(sdist, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["A-B.jinja", "SOURCE"]
    assert (out / "A-B.jinja").read_text() == "{{ x }}"


def test_a_run_without_templates_stops_before_any_work(llm, tmp_path: Path) -> None:
    from flows.toolace_pipeline import toolace_pipeline
    from toolace.config import RunConfig

    config = RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out=str(tmp_path / "out"),
                       target_model=None, chat_templates_dir=str(tmp_path / "none"), run_id="r1")
    with pytest.raises(TemplatesMissingError, match=r"no chat templates found .*make setup"):
        toolace_pipeline(config)
    assert not llm.requests and not (tmp_path / "out" / "staging" / "r1" / "tables").exists()


def test_preflight_leaves_a_missing_target_model_to_the_stage_that_loads_it(folder: Path, tmp_path: Path) -> None:
    from tasks.dialogs.complexity import TargetModelError

    gate = TemplateGate(families=["qwen3"], target_model=str(tmp_path / "missing-model"), target_explicit=True)
    gate.preflight()  # the complexity stage names the missing model, as before
    with pytest.raises(TargetModelError, match="does not exist"):
        gate.templates()
    with pytest.raises(TemplatesMissingError):
        TemplateGate(templates_dir=str(tmp_path / "none"), target_model=str(tmp_path / "missing-model")).preflight()


def test_fetch_downloads_the_sdist_with_pip_and_extracts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from toolace import chat_template_files as chat_templates

    seen: list[list[str]] = []

    def fake_pip(command: list[str], check: bool = False,
                 timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        assert timeout == chat_templates.PIP_TIMEOUT_S  # the download has a deadline
        seen.append(command)
        folder = Path(command[command.index("-d") + 1])
        with tarfile.open(folder / "llama_cpp_python-0.3.36.tar.gz", "w:gz") as archive:
            data = b"{{ messages }}"
            info = tarfile.TarInfo("llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates/Qwen3.5-4B.jinja")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(chat_templates.subprocess, "run", fake_pip)
    out = chat_templates.fetch_chat_templates(tmp_path / "templates")
    assert (out / "Qwen3.5-4B.jinja").read_text() == "{{ messages }}"
    assert seen[0][-1] == "llama-cpp-python==0.3.36" and "--no-binary" in seen[0] and "download" in seen[0]
