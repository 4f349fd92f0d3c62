"""Tests for toolace.config: config files (YAML/TOML), flag overrides, environment and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolace.config import (
    DEFAULT_TARGET_MODEL,
    SAMPLE_CORPUS,
    RunConfig,
    embedded_defaults,
    embedded_settings,
    load_config,
    load_run_config,
    read_config_file,
)
from toolace.errors import ConfigError, UserError


@pytest.fixture(autouse=True)
def _no_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own OPENAI_BASE_URL must not leak into these tests."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file() -> None:
    config = load_config()
    assert config.corpus == SAMPLE_CORPUS
    assert config.apis == 20
    assert config.target_model == DEFAULT_TARGET_MODEL
    assert config.llm_base_url is None
    assert config.dialog_mix == {"single": 0.3, "parallel": 0.2, "dependent": 0.15, "non_tool": 0.1,
                                 "clarification": 0.1, "multi_turn": 0.15}
    assert config.decision_samples == 3 and config.guidance_rounds == 2 and config.loss_bounds is None


def test_yaml_file_sets_options(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", (
        "apis: 7\n"
        "dialogs: 3\n"
        "llm-model: my-model\n"  # dashes are accepted as underscores
        "temperature: 0.1\n"
        "dialog_mix:\n"
        "  single: 1\n"
        "  parallel: 0\n"
    ))
    config = load_config(path)
    assert config.apis == 7
    assert config.dialogs == 3
    assert config.llm_model == "my-model"
    assert config.temperature == pytest.approx(0.1)
    assert config.dialog_mix == {"single": 1.0, "parallel": 0.0}


def test_yml_suffix_is_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yml", "seed: 42\n")
    assert load_config(path).seed == 42


def test_toml_file_sets_options(tmp_path: Path) -> None:
    path = write(tmp_path, "run.toml", (
        'corpus = "/data/docs"\n'
        "batch_size = 4\n"
        'llm_base_url = "http://localhost:9999/v1"\n'
        "\n[dialog_mix]\n"
        "parallel = 2.0\n"
    ))
    config = load_config(path)
    assert config.corpus == "/data/docs"
    assert config.batch_size == 4
    assert config.llm_base_url == "http://localhost:9999/v1"
    assert config.dialog_mix == {"parallel": 2.0}


def test_flags_override_file(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "apis: 7\ndialogs: 3\nllm_model: from-file\n")
    config = load_config(path, overrides={"apis": 11, "llm_model": "from-flag", "dialogs": None})
    assert config.apis == 11
    assert config.llm_model == "from-flag"
    # a flag left unset (None) does not erase the file's value
    assert config.dialogs == 3


def test_overrides_without_file() -> None:
    config = load_config(None, overrides={"seed": 5, "run_id": "abc"})
    assert config.seed == 5
    assert config.run_id == "abc"


def test_openai_base_url_env_used_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env-host:8000/v1")
    assert load_config().llm_base_url == "http://env-host:8000/v1"


def test_openai_base_url_env_does_not_override_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env-host:8000/v1")
    path = write(tmp_path, "run.yaml", "llm_base_url: http://file-host/v1\n")
    assert load_config(path).llm_base_url == "http://file-host/v1"


def test_openai_base_url_env_does_not_override_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env-host:8000/v1")
    config = load_config(overrides={"llm_base_url": "http://flag-host/v1"})
    assert config.llm_base_url == "http://flag-host/v1"


@pytest.mark.parametrize("word", ["none", "None", "off", " NONE ", ""])
def test_target_model_none_word(tmp_path: Path, word: str) -> None:
    path = write(tmp_path, "run.yaml", f"target_model: '{word}'\n")
    assert load_config(path).target_model is None


def test_target_model_none_yaml_unquoted(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "target_model: none\n")
    assert load_config(path).target_model is None


def test_target_model_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "run.toml", 'target_model = "HuggingFaceTB/SmolLM2-135M"\n')
    assert load_config(path).target_model == "HuggingFaceTB/SmolLM2-135M"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "apis: 3\nnot_an_option: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "not_an_option" in message
    assert str(path) in message


def test_unknown_key_in_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bogus_flag"):
        load_config(None, overrides={"bogus_flag": 1})


def test_malformed_yaml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "apis: [1, 2\ndialogs: : :\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not valid" in str(info.value)
    assert "\n" not in str(info.value)  # one-line message


def test_malformed_toml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.toml", "apis = = 3\n[unterminated\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "toml" in str(info.value).lower()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_config_file(tmp_path)


def test_non_mapping_file(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.yaml", "")
    assert read_config_file(path) == {}
    assert load_config(path).apis == 20


@pytest.mark.parametrize("key", ["api_key", "OPENAI_API_KEY", "llm_api_key", "aws_secret_access_key", "password"])
def test_secret_key_in_yaml_rejected(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, "secret.yaml", f"apis: 2\n{key}: sk-abcdef123456\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert key in message
    assert str(path) in message
    assert "sk-abcdef123456" not in message  # the secret itself is not echoed


def test_secret_key_in_toml_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.toml", 'api_key = "sk-zzz"\n')
    with pytest.raises(ConfigError, match="api_key"):
        load_config(path)


def test_config_error_is_user_error() -> None:
    assert issubclass(ConfigError, UserError)


def test_apis_zero_names_field(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "apis: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "apis" in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_override_names_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"batch_size": 0})
    assert "batch_size" in str(info.value)
    assert "options" in str(info.value)


def test_temperature_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, "run.toml", "temperature = 3.5\n")
    with pytest.raises(ConfigError, match="temperature"):
        load_config(path)


def test_dialog_mix_negative_weight(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "dialog_mix:\n  single: 1.0\n  parallel: -0.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "dialog_mix" in str(info.value)


def test_dialog_mix_all_zero(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "dialog_mix:\n  single: 0\n")
    with pytest.raises(ConfigError, match="dialog_mix"):
        load_config(path)


def test_loss_bounds_must_be_ordered(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "loss_bounds: [2.0, 1.0]\n")
    with pytest.raises(ConfigError, match="loss_bounds"):
        load_config(path)
    assert load_config(write(tmp_path, "ok.yaml", "loss_bounds: [0.5, 1.5]\n")).loss_bounds == (0.5, 1.5)


def test_dialog_mix_unknown_type(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "dialog_mix:\n  monologue: 1.0\n")
    with pytest.raises(ConfigError, match="dialog_mix"):
        load_config(path)


def test_wrong_type_value(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "dialogs: many\n")
    with pytest.raises(ConfigError, match="dialogs"):
        load_config(path)


_SECRET_LOOKING = re.compile(r"(sk-[A-Za-z0-9]{6,}|://[^/@\s]+:[^/@\s]+@|AKIA[0-9A-Z]{12,})")


def test_public_dict_has_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-supersecretvalue1234")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKIAABCDEFGHIJKLMNOP")
    config = load_config(overrides={"llm_base_url": "http://localhost:8000/v1", "llm_model": "m"})
    public = config.public_dict()
    assert set(public) == set(RunConfig.model_fields)
    flat = repr(public)
    assert "sk-supersecretvalue1234" not in flat
    assert "AKIAABCDEFGHIJKLMNOP" not in flat
    assert not _SECRET_LOOKING.search(flat)
    for key in public:
        assert not any(word in key.lower() for word in ("key", "secret", "password", "token_value"))


def test_public_dict_is_json_ready() -> None:
    import json

    public = load_config(overrides={"target_model": "none"}).public_dict()
    assert public["target_model"] is None
    assert json.loads(json.dumps(public)) == public


@pytest.mark.parametrize("source", ["flag", "env"])
def test_public_dict_redacts_endpoint_credentials(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """An endpoint URL holding user:password@ must not reach the manifest through public_dict()."""
    url = "https://alice:hunter2pass@llm.example.com/v1"
    if source == "env":
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        config = load_config()
    else:
        config = load_config(overrides={"llm_base_url": url})
    assert config.llm_base_url == url  # the run itself still uses the full URL
    flat = repr(config.public_dict())
    assert "hunter2pass" not in flat
    assert not _SECRET_LOOKING.search(flat)


# ---------------------------------------------------------------- the embedded model's settings (no endpoint)


EMBEDDED = {"apis": 8, "dialogs": 10, "decision_samples": 1, "guidance_rounds": 0, "model_checks": False,
            "llm_hedge": False,
            "dialog_mix": {"single": 0.35, "parallel": 0.2, "dependent": 0.1, "non_tool": 0.2, "clarification": 0.15}}


def assert_one_line(note: str | None) -> str:
    assert note is not None
    assert "\n" not in note and note == note.strip()
    return note


def test_no_endpoint_applies_every_embedded_setting() -> None:
    config, note = load_run_config()
    for key, value in EMBEDDED.items():
        assert getattr(config, key) == value, key
    note = assert_one_line(note)
    assert note.startswith("no endpoint, so the embedded model's settings apply: ")
    for fragment in ("apis 8", "dialogs 10", "decision_samples 1", "guidance_rounds 0", "model_checks false",
                     "llm_hedge false",
                     "dialog_mix single:0.35,parallel:0.2,dependent:0.1,non_tool:0.2,clarification:0.15",
                     "overrides any of them"):
        assert fragment in note
    # what the embedded settings leave alone keeps the RunConfig default
    assert config.candidate_tools == RunConfig().candidate_tools and config.target_model == DEFAULT_TARGET_MODEL


def test_load_config_alone_keeps_the_real_endpoint_defaults() -> None:
    config = load_config()
    assert (config.apis, config.dialogs, config.decision_samples, config.guidance_rounds, config.model_checks) == \
        (20, 20, 3, 2, True)


def test_flags_win_over_embedded_settings() -> None:
    config, note = load_run_config(None, {"dialogs": 4, "decision_samples": 3, "apis": None})
    assert config.dialogs == 4 and config.decision_samples == 3
    assert config.apis == 8 and config.guidance_rounds == 0  # the flags left unset (None) do not count
    note = assert_one_line(note)
    assert "dialogs 10" not in note and "decision_samples" not in note and "apis 8" in note


def test_config_file_keys_win_over_embedded_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "model_checks: true\nguidance-rounds: 2\ndialog_mix:\n  multi_turn: 1\n")
    config, note = load_run_config(path, {"dialogs": 12})
    assert config.model_checks is True and config.guidance_rounds == 2 and config.dialog_mix == {"multi_turn": 1.0}
    assert config.dialogs == 12 and config.decision_samples == 1 and config.apis == 8
    note = assert_one_line(note)
    assert "model_checks" not in note and "guidance_rounds" not in note and "dialog_mix" not in note


def test_a_file_value_equal_to_the_default_still_counts_as_explicit(tmp_path: Path) -> None:
    """Setting decision_samples: 3 (the RunConfig default) is a choice, not an unset option."""
    config, _ = load_run_config(write(tmp_path, "run.toml", "decision_samples = 3\n"))
    assert config.decision_samples == 3


def test_every_embedded_setting_explicit_means_no_note(tmp_path: Path) -> None:
    config, note = load_run_config(None, {**EMBEDDED, "dialogs": 30})
    assert note is None and config.dialogs == 30


@pytest.mark.parametrize("source", ["flag", "file", "env"])
def test_an_endpoint_keeps_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    url = "http://localhost:8000/v1"
    path = None
    overrides: dict[str, object] = {}
    if source == "flag":
        overrides["llm_base_url"] = url
    elif source == "file":
        path = write(tmp_path, "run.yaml", f"llm_base_url: {url}\n")
    else:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
    config, note = load_run_config(path, overrides)
    assert note is None
    assert (config.apis, config.dialogs, config.decision_samples, config.guidance_rounds, config.model_checks) == \
        (20, 20, 3, 2, True)


def test_embedded_defaults_is_a_plain_function() -> None:
    base = RunConfig(dialogs=7, seed=3)
    config, note = embedded_defaults(base, {"dialogs"})
    assert config.dialogs == 7 and config.seed == 3 and config.decision_samples == 1 and note
    assert base.decision_samples == 3  # the input config is not changed
    assert embedded_defaults(RunConfig(llm_base_url="http://h/v1"), set()) == (RunConfig(llm_base_url="http://h/v1"),
                                                                               None)


def test_embedded_settings_are_a_fresh_valid_dict_each_call() -> None:
    first = embedded_settings()
    first["dialog_mix"]["single"] = 99.0
    first["apis"] = 1
    assert embedded_settings() == EMBEDDED
    RunConfig(**embedded_settings())  # valid as a config


def test_the_comparison_datasets_recorded_configuration_still_loads() -> None:
    # docs/benchmarks.md names this file as the way dataset (c) of the downstream comparison is made again; a
    # RunConfig change that breaks it (a renamed or removed option: RunConfig forbids unknown keys) fails here
    path = Path(__file__).parents[1] / "benchmarks" / "configs" / "comparison-scripted-run.yaml"
    config = load_config(path, {"llm_base_url": "http://127.0.0.1:8765/v1", "llm_model": "scripted-model"})
    assert (config.apis, config.dialogs, config.model_checks, config.seed, config.run_id) == (
        60, 100, False, 0, "comparison-c")
    # the real-endpoint defaults apply to everything else (self-guidance, the loss task, three decision samples)
    assert config.target_model == DEFAULT_TARGET_MODEL and config.guidance_rounds == 2
