"""Settings from the environment and .env."""

from pathlib import Path

import pytest

from server.config import Settings, SettingsError


def test_defaults_follow_the_design(tmp_path):
    settings = Settings.from_env({}, dotenv=tmp_path / "absent.env")
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.sqlite_path == Path("data/cap.sqlite3")
    assert settings.sam_model_type == "vit_h"
    assert settings.sam_checkpoint == Path("server/sam_vit_h_4b8939.pth")
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
    ],
)
def test_bad_values_name_the_variable(environ, name):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ, dotenv=None)
    assert name in str(caught.value)
