"""Serving the model under evaluation with the embedded llama.cpp server (issue 21 item 4): a Hugging Face folder is
converted to GGUF by llama.cpp's own converter (extracted from the llama-cpp-python sdist), served on 127.0.0.1 with
parallel slots and asked through EndpointAnswers; ``transformers`` stays the fallback engine. Failures (converter
missing, conversion failing or past its deadline, server not starting in time) are one clear error, and no GGUF or
answers file that looks complete is left behind.

The model is a one-layer Llama (hidden size 32, SmolLM2's tokenizer) whose weights are set by hand so that greedy
decoding after the chat's generation prompt spells ``[square(n=7)]`` and stops: attention and MLP outputs are zero,
so each step sees only the current token's embedding, and the output head maps each token of the chain to the next.
The answer it gives through the server therefore shows that weights, tokenizer and chat template all made it into
the GGUF."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.evaluation.bfcl_data import BfclItem
from tasks.evaluation.bfcl_eval import Answer
from tasks.evaluation.model_serving import (
    CONVERTER_ENV,
    ConversionError,
    ConverterMissingError,
    ModelServingError,
    ServingOptions,
    answer_source,
    convert_to_gguf,
    default_engine,
    evaluate_complete,
    extract_converter,
    find_converter,
    find_sdist,
    resolve_engine,
)
from toolace.cli import app
from toolace.errors import EndpointError

ANSWER = "[square(n=7)]"
SQUARE = {"name": "square", "description": "Square a number.",
          "parameters": {"type": "dict", "properties": {"n": {"type": "integer", "description": "The number."}},
                         "required": ["n"]}}


def items() -> dict[str, list[BfclItem]]:
    """Two items the model answers the same way: right for the first (n=7), wrong for the second (n=8)."""
    return {"simple_python": [
        BfclItem(f"square_{n}", "simple_python", [[{"role": "user", "content": f"What is {n} squared?"}]], [SQUARE],
                 [{"square": {"n": [n]}}]) for n in (7, 8)]}


@pytest.fixture(scope="session")
def converter_dir(tmp_path_factory) -> Path:
    """The converter as `make setup` installs it, else extracted from the sdist the bindings were built from."""
    from tasks.evaluation.model_serving import _complete, venv_converter_dir

    if _complete(venv_converter_dir()):
        return venv_converter_dir()
    sdist = find_sdist()
    assert sdist is not None, "neither the venv's converter nor the llama-cpp-python sdist: run `make setup`"
    return extract_converter(sdist, tmp_path_factory.mktemp("converter") / "gguf_converter")


@pytest.fixture
def converter(converter_dir, monkeypatch) -> Path:
    monkeypatch.setenv(CONVERTER_ENV, str(converter_dir))
    return converter_dir


@pytest.fixture(scope="session")
def chain_model(tiny_base, tmp_path_factory) -> Path:
    """A Hugging Face folder whose greedy answer to any chat is ``[square(n=7)]`` (see the module docstring)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"]
    chain = [prompt[-1], *tokenizer(ANSWER, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain), "the chain needs distinct tokens"
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings, head = model.model.embed_tokens.weight, model.lm_head.weight
        embeddings.normal_(0.0, 0.02)
        head.zero_()
        for k, (current, following) in enumerate(zip(chain, chain[1:], strict=False)):
            embeddings[current] = 0.0
            embeddings[current, k] = 1.0
            head[following, k] = 10.0
    folder = tmp_path_factory.mktemp("chain-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # the marker of a GGUF-sourced base (a model tuned from smollm2 keeps it): the conversion must drop it
    saved = json.loads((folder / "config.json").read_text())
    saved["quantization_config"] = {"dequantize": False, "gguf_file": "tiny.gguf", "quant_method": "gguf"}
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


@pytest.fixture(scope="session")
def chain_gguf(chain_model, converter_dir, tmp_path_factory) -> Path:
    return convert_to_gguf(chain_model, cache_dir=tmp_path_factory.mktemp("gguf-cache"),
                           converter=converter_dir / "convert_hf_to_gguf.py")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------------------------------------ converter


def test_the_converter_is_extracted_from_the_sdist_whole(tmp_path):
    sdist = find_sdist()
    assert sdist is not None
    dest = extract_converter(sdist, tmp_path / "conv")
    assert (dest / "convert_hf_to_gguf.py").is_file() and (dest / "conversion" / "llama.py").is_file()
    assert (dest / "gguf-py" / "gguf" / "gguf_writer.py").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name != "conv"]  # no temporary folder left beside it
    not_sdist = tmp_path / "other.tar.gz"
    import tarfile

    with tarfile.open(not_sdist, "w:gz") as archive:
        archive.add(dest / "SOURCE", arcname="x/README")
    with pytest.raises(ConverterMissingError, match="is it a llama-cpp-python sdist"):
        extract_converter(not_sdist, tmp_path / "conv2")
    assert not (tmp_path / "conv2").exists()


def test_a_missing_converter_is_one_clear_error(monkeypatch, tmp_path, chain_model):
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path / "empty"))
    with pytest.raises(ConverterMissingError) as caught:
        find_converter()
    message = str(caught.value)
    assert "convert_hf_to_gguf.py was not found" in message and str(tmp_path / "empty") in message
    assert "make setup" in message and "--engine transformers" in message
    with pytest.raises(ConverterMissingError):
        convert_to_gguf(chain_model, cache_dir=tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []


# ------------------------------------------------------------------------------------------------ conversion


def test_a_tuned_folder_is_converted_once_and_the_gguf_holds_the_model(chain_model, chain_gguf, converter):
    with chain_gguf.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    from llama_cpp import Llama

    vocab = Llama(model_path=str(chain_gguf), vocab_only=True, verbose=False)  # llama.cpp reads it back
    fields = dict(vocab.metadata)
    vocab.close()
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == "1" and fields["llama.embedding_length"] == "32"
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    written = chain_gguf.stat().st_mtime_ns
    assert convert_to_gguf(chain_model, cache_dir=chain_gguf.parent) == chain_gguf  # cached: not converted again
    assert chain_gguf.stat().st_mtime_ns == written
    assert [p.name for p in chain_gguf.parent.iterdir()] == [chain_gguf.name]  # no temporary file left


def fake_converter(folder: Path, body: str) -> Path:
    """A stand-in for convert_hf_to_gguf.py (same arguments) whose behaviour is ``body``: the failures are ours to
    handle whatever the converter does, and a fake one costs no torch import."""
    script = folder / "convert_hf_to_gguf.py"
    script.write_text("import sys, time\nout = sys.argv[sys.argv.index('--outfile') + 1]\n" + body + "\n")
    return script


@pytest.mark.parametrize(("body", "message"), [
    ("open(out, 'wb').write(b'GGUF half')\nprint('NotImplementedError: Architecture NoSuchModel not supported')\n"
     "sys.exit(1)", "failed (exit 1): NotImplementedError: Architecture NoSuchModel not supported"),
    ("open(out, 'wb').write(b'GGUF half')\ntime.sleep(60)", "did not finish within 1 s"),
    ("open(out, 'wb').write(b'not a gguf')", "wrote no GGUF file"),
])
def test_a_failing_conversion_names_the_cause_and_leaves_no_gguf(body, message, tmp_path, chain_model):
    script = fake_converter(tmp_path, body)
    with pytest.raises(ConversionError, match=re.escape(message)):
        convert_to_gguf(chain_model, cache_dir=tmp_path / "cache", converter=script, timeout_s=1.0)
    assert leftovers(tmp_path / "cache") == []  # nothing that looks like a converted model
    with pytest.raises(ConversionError, match="not a Hugging Face model folder"):
        convert_to_gguf(tmp_path, out_file=tmp_path / "x.gguf", converter=script)


def test_the_real_converter_refuses_an_unknown_architecture(converter, tmp_path, chain_model):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).symlink_to(chain_model / name)
    config = json.loads((chain_model / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchModelForCausalLM"]}))
    with pytest.raises(ConversionError) as caught:
        convert_to_gguf(broken, cache_dir=tmp_path / "cache")
    assert "failed (exit" in str(caught.value) and "NoSuchModelForCausalLM" in str(caught.value)
    assert leftovers(tmp_path / "cache") == []


# ------------------------------------------------------------------------------------------------ serving


def test_the_gguf_answers_through_the_server_and_is_scored(chain_model, chain_gguf, converter, tmp_path):
    output = tmp_path / "answers.jsonl"
    options = ServingOptions(engine="llama-server", slots=2, cache_dir=str(chain_gguf.parent))
    with answer_source(str(chain_model), 16, options) as source:
        assert "llama.cpp" in source.description and "2 slots" in source.description
        assert source.settings.concurrency == 2 and not source.settings.hedge  # type: ignore[attr-defined]
        scores = evaluate_complete(items(), source, str(output))
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["id"], r["answer"], r["valid"]) for r in rows] == \
        [("square_7", ANSWER, True), ("square_8", ANSWER, False)]
    assert (scores[0].correct, scores[0].items) == (1, 2)
    assert not (tmp_path / "answers.jsonl.partial").exists()


def test_the_transformers_engine_answers_the_same(chain_model):
    with answer_source(str(chain_model), 16, ServingOptions(engine="transformers")) as source:
        answers = source.answer([[{"role": "user", "content": "What is 7 squared?"}]])
    assert [a.text for a in answers] == [ANSWER]


def test_the_engine_is_chosen_and_checked(monkeypatch):
    import tasks.evaluation.model_serving as serving

    assert default_engine() == "llama-server"  # llama-cpp-python is installed here
    monkeypatch.setattr(serving, "llama_cpp_installed", lambda: False)
    assert default_engine() == resolve_engine(None) == "transformers"
    with pytest.raises(ModelServingError, match=r"needs llama-cpp-python.*\[embedded\].*--engine transformers"):
        resolve_engine("llama-server")
    with pytest.raises(ModelServingError, match="unknown engine 'vllm': choose llama-server or transformers"):
        resolve_engine("vllm")


def test_a_server_that_does_not_start_in_time_is_an_error(chain_gguf, tmp_path):
    options = ServingOptions(engine="llama-server", slots=1, startup_timeout_s=0.01)
    with pytest.raises(EndpointError, match="did not answer within 0 s"), answer_source(str(chain_gguf), 8, options):
        pass
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(EndpointError, match="exited at start-up"), \
            answer_source(str(garbage), 8, ServingOptions(engine="llama-server", slots=1)):
        pass


def test_an_evaluation_that_fails_half_way_leaves_no_answers_file(tmp_path):
    class FailsSecondChunk:
        description, chunk_size, calls = "fake", 1, 0

        def answer(self, chats):
            self.calls += 1
            if self.calls == 2:
                raise EndpointError("the endpoint http://127.0.0.1:1/v1 failed to answer: connection refused")
            return [Answer(ANSWER) for _ in chats]

    output = tmp_path / "answers.jsonl"
    with pytest.raises(EndpointError):
        evaluate_complete(items(), FailsSecondChunk(), str(output))
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_eval_serves_a_folder_with_llama_cpp(chain_model, chain_gguf, converter, monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLACE_GGUF_CACHE", str(chain_gguf.parent))
    output = tmp_path / "eval.jsonl"
    result = CliRunner().invoke(app, ["eval", "--model", str(chain_model), "--engine", "llama-server", "--slots", "1",
                                      "--category", "simple_python", "--limit", "2", "--max-tokens", "16",
                                      "--output", str(output)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["answer"] for r in rows] == [ANSWER, ANSWER] and "llama.cpp" in rows[0]["model"]
    assert "simple_python" in result.stdout and "llama.cpp" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "vllm"], "unknown engine 'vllm'"),
    (["--slots", "0"], "--slots must be at least 1"),
    (["--model", "some-org/some-model", "--engine", "llama-server"], "serves local files only"),
])
def test_cli_eval_engine_errors(args, message):
    result = CliRunner().invoke(app, ["eval", "--limit", "1", *args])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and message in result.output


def test_cli_eval_that_fails_to_serve_writes_no_output(tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + os.urandom(64))
    output = tmp_path / "eval.jsonl"
    result = CliRunner().invoke(app, ["eval", "--model", str(garbage), "--engine", "llama-server", "--limit", "1",
                                      "--output", str(output)])
    assert result.exit_code == 1 and "exited at start-up" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.gguf"]


def test_a_lora_adapter_is_merged_into_its_base_before_conversion(chain_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tasks.evaluation.model_serving import is_adapter, merge_adapter

    base = AutoModelForCausalLM.from_pretrained(chain_model)
    adapter = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    assert is_adapter(tmp_path / "adapter") and not is_adapter(chain_model)
    merged = merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    weights, original = load_file(merged / "model.safetensors"), load_file(chain_model / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(weights[name], original[name])  # the adapter's update is in the weights
    assert torch.equal(weights["lm_head.weight"], original["lm_head.weight"])  # the rest is the base
    assert (merged / "tokenizer_config.json").is_file() and (merged / "config.json").is_file()
