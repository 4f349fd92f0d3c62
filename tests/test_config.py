"""Tests for toolace.config: config files (YAML/TOML), flag overrides, environment and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolace.config import DEFAULT_TARGET_MODEL, SAMPLE_CORPUS, RunConfig, load_config, read_config_file
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
