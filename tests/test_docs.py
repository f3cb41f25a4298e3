"""The README stays true to the code (.env.example: test_env_example.py)."""

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from server.config import Settings
from tests.conftest import ws_url

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
SETTINGS = {field.name.upper() for field in dataclasses.fields(Settings)}


def test_readme_settings_table_names_every_setting():
    table = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z_]+)`", cell)}
    assert named == SETTINGS


def environment_reads(source: str) -> list[str]:
    """What a module reads from the environment: each variable's name, `?` for a read whose
    name is not a literal, and `os.environ` for the whole mapping."""
    tree = ast.parse(source)
    reads, named = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            key, environ = node.slice, node.value
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv") and node.args:
            key, environ = node.args[0], node.func
        else:
            continue
        reads.append(key.value if isinstance(key, ast.Constant) else "?")
        named.update(id(inner) for inner in ast.walk(environ))
    reads += [
        "os.environ" for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and ast.unparse(node) == "os.environ" and id(node) not in named
    ]
    return reads


def test_the_server_reads_no_environment_variable_outside_settings():
    """Settings.from_env is the server's only reader of the environment, so the checks above
    see every setting; a direct read elsewhere would also skip `.env`."""
    found = {
        str(path.relative_to(REPO)): environment_reads(path.read_text()) for path in sorted((REPO / "server").rglob("*.py"))
    }
    assert found.pop("server/config.py") == ["os.environ"]  # Settings.from_env, the one sanctioned read
    assert {path: reads for path, reads in found.items() if reads} == {}


def test_the_environment_scan_sees_every_kind_of_read():
    source = "import os\nA = os.environ['CAP_X']\nB = os.getenv('CAP_Y', '')\nC = os.environ.get(name)\nD = dict(os.environ)\n"
    assert sorted(environment_reads(source)) == ["?", "CAP_X", "CAP_Y", "os.environ"]


def test_readme_shows_the_example_client_verbatim():
    assert (REPO / "examples" / "segment.py").read_text().strip() in README


def test_the_example_client_runs_against_a_real_server(start_app, image_server):
    app = start_app()
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "segment.py"), ws_url(app), image_server.url("/photo.jpg")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split('"type": "')[1].split('"')[0] for line in lines] == ["queued", "status", "result"]

    failed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "segment.py"), ws_url(app), image_server.url("/missing.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr  # an error answer is a failure
    assert '"code": "image_download_failed"' in failed.stdout


def test_readme_names_the_two_commands_and_ci_runs_the_test_command():
    assert "`./scripts/run`" in README and "`./scripts/test`" in README
    assert "exec ./scripts/test" in (REPO / ".ci" / "run").read_text()


def test_readme_shows_the_command_line_clients_usage_verbatim():
    done = subprocess.run(
        [sys.executable, "-m", "server.client", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "100"},
    )
    assert done.returncode == 0, done.stderr
    assert "$ .venv/bin/python -m server.client --help\n" + done.stdout.rstrip() + "\n```" in README


def test_readme_shows_the_pages_screenshot():
    assert "](docs/page.png)" in README
    with Image.open(REPO / "docs" / "page.png") as screenshot:
        assert screenshot.format == "PNG" and screenshot.width >= 800
