"""Settings from the environment and .env."""

from pathlib import Path

import pytest

from server.config import Settings, SettingsError
from tests.support.sentences import assert_one_sentence


def test_defaults_follow_the_design(tmp_path):
    settings = Settings.from_env({}, dotenv=tmp_path / "absent.env")
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.sqlite_path == Path("data/cap.sqlite3")
    assert settings.sam_model_type == "vit_h"
    assert settings.sam_checkpoint == Path("server/sam_vit_h_4b8939.pth")
    assert settings.precision == "auto"
    assert settings.cosmos_endpoint is None and settings.api_token is None
    assert settings.allow_private_urls is False
    assert (settings.max_boxes, settings.max_message_bytes, settings.max_queue) == (64, 65536, 256)
    assert (settings.request_timeout, settings.job_timeout, settings.poll_interval) == (10, 600, 1)


def test_environment_overrides_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9000\nSAM_MODEL_TYPE=vit_b\nALLOW_PRIVATE_URLS=true\n# a comment\nMAX_BOXES=8\n")
    settings = Settings.from_env({"PORT": "9100"}, dotenv=dotenv)
    assert settings.port == 9100
    assert settings.sam_model_type == "vit_b"
    assert settings.allow_private_urls is True
    assert settings.max_boxes == 8


def test_empty_optional_values_mean_unset(tmp_path):
    settings = Settings.from_env({"API_TOKEN": "", "COSMOS_ENDPOINT": ""}, dotenv=None)
    assert settings.api_token is None and settings.cosmos_endpoint is None


@pytest.mark.parametrize(
    "environ, name",
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"ALLOW_PRIVATE_URLS": "maybe"}, "ALLOW_PRIVATE_URLS"),
        ({"SAM_MODEL_TYPE": "vit_x"}, "SAM_MODEL_TYPE"),
        ({"MAX_BOXES": "0"}, "MAX_BOXES"),
        ({"DOWNLOAD_TIMEOUT": "-1"}, "DOWNLOAD_TIMEOUT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"PRECISION": "fp16"}, "PRECISION"),
        ({"SAM_MODEL_TYPE": "sam2_hiera_t"}, "SAM_MODEL_TYPE"),  # SAM 2.0: not served, 2.1 replaces it
    ],
)
def test_bad_values_name_the_variable(environ, name):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ, dotenv=None)
    assert name in str(caught.value)
    assert_one_sentence(str(caught.value))


def test_cap_env_file_names_the_dotenv_file_and_empty_means_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PORT=9001\n")
    other = tmp_path / "other.env"
    other.write_text("PORT=9002\n")
    assert Settings.from_env({}).port == 9001  # unset: .env in the working directory
    assert Settings.from_env({"CAP_ENV_FILE": str(other)}).port == 9002
    assert Settings.from_env({"CAP_ENV_FILE": ""}).port == 8080  # empty: no file at all
    with pytest.raises(SettingsError, match="CAP_ENV_FILE"):
        Settings.from_env({"CAP_ENV_FILE": str(tmp_path / "missing.env")})


def test_a_checkpoint_named_for_another_model_type_is_refused_with_what_to_set():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SAM_MODEL_TYPE": "vit_b", "SAM_CHECKPOINT": "/checkpoints/sam_vit_h_4b8939.pth"}, dotenv=None)
    assert "SAM_CHECKPOINT=/checkpoints/sam_vit_b_01ec64.pth" in str(caught.value)
    assert Settings.from_env({"SAM_MODEL_TYPE": "vit_b", "SAM_CHECKPOINT": "/c/sam_vit_b_01ec64.pth"}, dotenv=None)


def test_the_default_checkpoint_follows_the_model_type():
    settings = Settings.from_env({"SAM_MODEL_TYPE": "vit_b"}, dotenv=None)
    assert settings.sam_checkpoint == Path("server/sam_vit_b_01ec64.pth")


@pytest.mark.parametrize(
    "model_type, name",
    [("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt"), ("sam2.1_hiera_s", "sam2.1_hiera_small.pt"),
     ("sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt"), ("sam2.1_hiera_l", "sam2.1_hiera_large.pt")],
)
def test_sam2_model_types_take_meta_s_file_names(model_type, name):
    settings = Settings.from_env({"SAM_MODEL_TYPE": model_type, "PRECISION": "fp32"}, dotenv=None)
    assert settings.sam_checkpoint == Path("server") / name and settings.precision == "fp32"
    with pytest.raises(SettingsError, match=f"SAM_MODEL_TYPE={model_type}"):
        Settings.from_env({"SAM_MODEL_TYPE": model_type, "SAM_CHECKPOINT": "/c/sam_vit_b_01ec64.pth"}, dotenv=None)


def test_outside_a_clone_the_default_checkpoint_is_in_the_working_folders_checkpoints(tmp_path, monkeypatch):
    """An installed `cap` runs from any folder: its default is ./checkpoints/, not a ./server/ of its own."""
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}, dotenv=None).sam_checkpoint == Path("checkpoints/sam_vit_h_4b8939.pth")
    (tmp_path / "server").mkdir()  # a folder named server that does not hold CAP's code
    settings = Settings.from_env({"SAM_MODEL_TYPE": "sam2.1_hiera_t"}, dotenv=None)
    assert settings.sam_checkpoint == Path("checkpoints/sam2.1_hiera_tiny.pt")


def test_no_secret_is_in_the_settings_repr():
    """A logged or printed Settings (a traceback, a debugger) shows no key or token."""
    settings = Settings.from_env(
        {"COSMOS_KEY": "cosmos-secret", "API_TOKEN": "a-token,b-token", "LABEL_STUDIO_API_KEY": "ls-secret"},
        dotenv=None,
    )
    assert settings.cosmos_key == "cosmos-secret" and settings.label_studio_api_key == "ls-secret"
    assert not any(secret in repr(settings) for secret in ("cosmos-secret", "a-token", "ls-secret"))
