"""Reading a GGUF file's metadata without its tensors: against gguf-py's own reader on the real SmolLM2 GGUF and on
files gguf-py's writer makes (both byte orders), and a verdict, not a crash or a read past the end, on bad files."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from gguf import GGUFEndian, GGUFReader, GGUFValueType, GGUFWriter

from tasks.dialogs.complexity import TargetModelError
from tasks.formats.gguf_metadata import GGUFMetadataError, read_metadata
from tasks.verification.template_gate import target_template
from toolace.llm.embedded_server import default_gguf_path

SMOLLM2_KEYS = ["general.architecture", "general.name", "llama.context_length", "llama.block_count",
                "tokenizer.chat_template", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "general.quantization_version"]


def test_the_shipped_smollm2_gguf_reads_as_gguf_py_reads_it() -> None:
    path = default_gguf_path()
    found = read_metadata(path, [*SMOLLM2_KEYS, "no.such.key"])
    reader = GGUFReader(str(path))
    for key in SMOLLM2_KEYS:
        field = reader.get_field(key)
        assert field is not None, key
        assert found[key] == field.contents(), key
    assert "no.such.key" not in found
    assert len(found["tokenizer.ggml.tokens"]) == 49152 and found["tokenizer.ggml.bos_token_id"] == 1
    assert "<|im_start|>" in found["tokenizer.chat_template"]


def test_the_target_models_template_comes_from_the_header() -> None:
    template = target_template(str(default_gguf_path()))
    assert template is not None
    assert (template.bos_token, template.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert "<|im_start|>" in template.text


def written(path: Path, endian: GGUFEndian = GGUFEndian.LITTLE) -> Path:
    """A GGUF with every value type, written by gguf-py (no tensors)."""
    writer = GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_string("t.string", "héllo\nworld")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -5)
    writer.add_uint16("t.u16", 65000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 0.5)
    writer.add_uint64("t.u64", 2**60)
    writer.add_int64("t.i64", -(2**60))
    writer.add_float64("t.f64", 1.25)
    writer.add_bool("t.bool", True)
    writer.add_array("t.strings", ["a", "", "ünïcode", "<|im_end|>"])
    writer.add_array("t.ints", [1, -2, 3])
    writer.add_array("t.floats", [0.25, 1.5])
    writer.add_key_value("t.nested", [[1, 2], [3]], GGUFValueType.ARRAY)
    writer.add_string("t.after", "last")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


EXPECTED = {"general.architecture": "llama", "t.string": "héllo\nworld", "t.u8": 200, "t.i8": -5, "t.u16": 65000,
            "t.i16": -30000, "t.u32": 4_000_000_000, "t.i32": -2_000_000_000, "t.f32": 0.5, "t.u64": 2**60,
            "t.i64": -(2**60), "t.f64": 1.25, "t.bool": True, "t.strings": ["a", "", "ünïcode", "<|im_end|>"],
            "t.ints": [1, -2, 3], "t.floats": [0.25, 1.5], "t.nested": [[1, 2], [3]], "t.after": "last"}


@pytest.mark.parametrize("endian", [GGUFEndian.LITTLE, GGUFEndian.BIG])
def test_every_value_type_of_a_file_gguf_py_wrote(tmp_path: Path, endian: GGUFEndian) -> None:
    path = written(tmp_path / "all.gguf", endian)
    assert read_metadata(path, EXPECTED) == EXPECTED
    reader = GGUFReader(str(path))
    for key in EXPECTED:
        if key != "t.nested":  # gguf-py's contents() does not return nested arrays as lists
            assert reader.get_field(key).contents() == EXPECTED[key], key
    assert read_metadata(path, ["t.after"]) == {"t.after": "last"}  # read past the skipped values correctly


def test_bad_files_are_one_error_naming_the_file(tmp_path: Path) -> None:
    good = written(tmp_path / "good.gguf").read_bytes()
    cases = {
        "not-gguf.gguf": b"hello, this is not a model",
        "empty.gguf": b"",
        "cut.gguf": good[: len(good) // 2],
        "version1.gguf": b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
        "many-pairs.gguf": b"GGUF" + struct.pack("<IQQ", 3, 0, 2**60),
        "long-key.gguf": b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**62) + b"k",
        "bad-type.gguf": b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1) + b"k" + struct.pack("<I", 99),
        "huge-array.gguf": b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1) + b"k" + struct.pack("<IIQ", 9, 8, 2**59),
        "huge-int-array.gguf": b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1) + b"k" + struct.pack("<IIQ", 9, 4, 2**59),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        started = time.monotonic()
        with pytest.raises(GGUFMetadataError) as caught:
            read_metadata(path, ["k", "t.after"])
        assert time.monotonic() - started < 5, name  # a verdict, not a walk over 2**59 claimed elements
        message = str(caught.value)
        assert message.startswith(str(path)) and "\n" not in message, message
    with pytest.raises(GGUFMetadataError, match="cannot be read"):
        read_metadata(tmp_path / "missing.gguf", ["k"])


def test_a_broken_target_gguf_is_a_target_model_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 5))
    with pytest.raises(TargetModelError) as caught:
        target_template(str(path))
    assert str(caught.value) == (f"target model {path}: not a readable GGUF: 5 key-value pairs cannot fit in the "
                                 "file at byte 24")
