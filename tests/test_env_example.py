""".env.example, the template for `.env` and for Docker's `--env-file`: both readers get the same
values from it, and they are the settings the server accepts (its defaults)."""

import dataclasses
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values

from server.config import Settings, SettingsError

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / ".env.example"
SETTINGS = {field.name.upper() for field in dataclasses.fields(Settings)}


class BadEnvFile(ValueError):
    pass


def docker_env_file(text: str, host_environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables `docker run --env-file` sets from `text`, by Docker's rules (docker/cli,
    opts/file.go): lines split on newlines (a trailing CR dropped), a UTF-8 BOM dropped from the first,
    leading whitespace dropped; empty lines and lines starting with `#` skipped; the rest split at the
    first `=` into a name (leading blanks dropped, no blank inside) and a value taken literally: no
    quotes removed, no comment after the value recognised, trailing blanks kept. A line without `=`
    passes on the host's variable of that name."""
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n")):
        if raw.endswith("\r"):
            raw = raw[:-1]
        if number == 0 and raw.startswith("\ufeff"):
            raw = raw[1:]
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name, has_value, value = line.partition("=")
        name = name.lstrip(" \t")
        if not name or " " in name or "\t" in name:
            raise BadEnvFile(f"poorly formatted environment: {line!r}")
        if has_value:
            variables[name] = value
        elif host_environ and name in host_environ:
            variables[name] = host_environ[name]
    return variables


def test_the_docker_reader_takes_values_literally():
    assert docker_env_file('A=1 # one\nB="two"\n  # note\n\nC= 3 \r\nD\n', {"D": "host"}) == {
        "A": "1 # one", "B": '"two"', "C": " 3 ", "D": "host",
    }
    assert docker_env_file("\ufeffA=1\n") == {"A": "1"}
    with pytest.raises(BadEnvFile):
        docker_env_file("MY VAR=1\n")
    # What the old template did: a comment after the value becomes part of it, and the server refuses it.
    with pytest.raises(SettingsError, match="PORT"):
        Settings.from_env(docker_env_file("PORT=8080                             # HTTP\n"), dotenv=None)


def test_docker_and_python_dotenv_read_the_same_values():
    assert docker_env_file(TEMPLATE.read_text()) == dotenv_values(TEMPLATE)


def test_both_readers_give_the_settings_the_server_accepts_its_defaults():
    from_docker = Settings.from_env(docker_env_file(TEMPLATE.read_text()), dotenv=None)
    from_dotenv = Settings.from_env({}, dotenv=TEMPLATE)
    assert from_docker == from_dotenv == Settings()


def test_the_template_names_every_setting_once():
    text = TEMPLATE.read_text()
    active = list(docker_env_file(text))
    commented = re.findall(r"^#([A-Z][A-Z_]+)=", text, flags=re.MULTILINE)
    # SAM_CHECKPOINT stays commented: its default follows SAM_MODEL_TYPE, and the Docker image sets its own.
    assert commented == ["SAM_CHECKPOINT"]
    assert sorted(active + commented) == sorted(SETTINGS)
