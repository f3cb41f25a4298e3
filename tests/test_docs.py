"""README.md and docs/ stay true to the code, and their links resolve (.env.example: test_env_example.py)."""

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from harness import image_files
from server.config import Settings
from server.errors import CLOSE_CODES
from server.models.registry import MODEL_TYPES
from tests.conftest import ws_url

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
PROTOCOL = (DOCS / "protocol.md").read_text()
ARCHITECTURE = (DOCS / "architecture.md").read_text()
RECORDS = (DOCS / "records.md").read_text()
SERVER = REPO / "server"
SETTINGS_DOC = (DOCS / "settings.md").read_text()
SETTINGS = {field.name.upper() for field in dataclasses.fields(Settings)}
# Every page whose links must resolve.
PAGES = [REPO / "README.md", REPO / "bench" / "README.md", *sorted(DOCS.glob("*.md"))]


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every body row of every table (header and rule rows left out)."""
    rows = []
    for block in re.split(r"\n(?!\|)", markdown):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        for line in lines[2:]:
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(heading + "\n") + len(heading) + 1
    following = re.search(rf"^#{{1,{len(level)}}} ", markdown[start:], re.M)
    return markdown[start : start + following.start()] if following else markdown[start:]


# --- settings ------------------------------------------------------------------------------


def documented_settings() -> dict[str, str]:
    """docs/settings.md: each setting's name -> the default its table row states."""
    documented = {}
    for cells in table_rows(SETTINGS_DOC):
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        if len(cells) == 3 and len(names) == 1 and cells[0] == f"`{names[0]}`":
            assert names[0] not in documented, f"{names[0]} has two rows in docs/settings.md"
            documented[names[0]] = cells[1]
    return documented


def test_docs_settings_has_a_row_for_every_setting_and_no_other():
    assert set(documented_settings()) == SETTINGS


def test_docs_settings_states_each_code_default():
    """Each row's default, read back through Settings.from_env, is the code's default."""
    for name, cell in documented_settings().items():
        if cell == "unset":
            assert getattr(Settings(), name.lower()) is None, f"{name}: documented as unset"
            continue
        value = re.match(r"`([^`]*)`", cell)
        assert value, f"{name}: the default cell {cell!r} has no `value`"
        read_back = Settings.from_env({name: value.group(1)}, dotenv=None)
        assert read_back == Settings(), f"{name}: docs/settings.md says {value.group(1)!r}, the code's default differs"


def test_readmes_common_settings_are_real_settings():
    named = {
        name for cells in table_rows(section(README, "## Settings")) for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
    }
    assert named and named <= SETTINGS, named - SETTINGS


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


# --- the map ---------------------------------------------------------------------------------


def server_files() -> set[str]:
    """What docs/architecture.md must name, each by its path under server/: every module but the
    `__init__.py` files, and every file of the page."""
    modules = {path for path in SERVER.rglob("*.py") if path.name != "__init__.py"}
    page = {path for path in (SERVER / "page").rglob("*") if path.is_file()}
    return {path.relative_to(SERVER).as_posix() for path in modules | page}


def named_files(markdown: str) -> set[str]:
    """The files a page names in code type, whole: `connection.py`, `models/registry.py`, `page/app.js`."""
    return set(re.findall(r"`([\w/.+-]+\.(?:py|js|html|css|svg))`", markdown))


def test_docs_architecture_names_every_server_module_and_page_file():
    """The map names each module under server/ (by its path under server/) and each page file, and
    no file that is gone (a name is looked for under server/, then from the repository's root)."""
    files = server_files()
    assert {"main.py", "models/registry.py", "store/sqlite.py", "page/index.html"} <= files  # the scan sees every level
    named = named_files(ARCHITECTURE)
    missing = sorted(files - named)
    assert not missing, (
        f"docs/architecture.md does not name {len(missing)} file(s) under server/: {', '.join(missing)}. "
        "Name each in code type by its path under server/ (as `fetch.py`, `models/registry.py`), in its layer's table."
    )
    gone = sorted(name for name in named if not (SERVER / name).is_file() and not (REPO / name).is_file())
    assert not gone, f"docs/architecture.md names file(s) that do not exist: {', '.join(gone)}"


def test_docs_records_names_every_model_type():
    """SAMOutput's `model` is a SAM_MODEL_TYPE: records.md lists the registry's types, all of them."""
    [model] = [cells for cells in table_rows(section(RECORDS, "## Fields")) if cells[0] == "`model`"]
    named = [name for name in re.findall(r"`([^`]+)`", model[1]) if not name.isupper()]  # a setting's name aside
    assert named == list(MODEL_TYPES)


# --- the protocol ----------------------------------------------------------------------------


def test_docs_protocol_lists_every_error_code_with_its_close_code():
    documented = {}
    for cells in table_rows(section(PROTOCOL, "## Errors")):
        code = re.fullmatch(r"`([a-z_]+)`", cells[0])
        if code:
            assert code.group(1) not in documented, f"{code.group(1)} has two rows"
            documented[code.group(1)] = None if cells[1] == "none" else int(cells[1])
    assert documented == CLOSE_CODES


# --- links -----------------------------------------------------------------------------------


def without_code(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", markdown)


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a page: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def relative_links(markdown: str) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", without_code(markdown))
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    assert relative_links(page.read_text()), "no relative links found: the scan is broken"
    assert broken_links(page) == []


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A section, with `code`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Here\n\n[ok](other.md#a-section-with-code) [ok](#here) [ok](other.md)\n"
        "[gone](missing.md) [gone](other.md#nowhere) [gone](#not-here) [web](https://example.com/x)\n"
        "```\n[not a link](inside-code.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
        "#not-here: no heading #not-here in page.md",
    ]


def test_the_docs_table_of_contents_lists_every_document():
    listed = set(re.findall(r"\]\(([\w-]+\.md)\)", (DOCS / "README.md").read_text()))
    assert listed == {path.name for path in DOCS.glob("*.md")} - {"README.md"}


def test_nothing_cites_the_design_input():
    """Code and docs cite README.md and docs/, never the design input they were written from."""
    citation = re.compile("DESIGN" + r"(\.md| §)")
    texts = [*PAGES, *REPO.glob("server/**/*.py"), *REPO.glob("tests/**/*.py"), *REPO.glob("harness/**/*.py"), *REPO.glob("bench/*.py")]
    assert [str(path.relative_to(REPO)) for path in texts if citation.search(path.read_text())] == []


# --- examples, as they run -------------------------------------------------------------------


def test_docs_clients_show_the_example_client_verbatim():
    assert (REPO / "examples" / "segment.py").read_text().strip() in (DOCS / "clients.md").read_text()


def sample_output(markdown: str, command: str) -> tuple[str, list[str]]:
    """The paragraph before a code block that starts with `$ <command>`, and the block's output lines."""
    start = markdown.index("```\n$ " + command)
    block = markdown[start + 4 : markdown.index("```", start + 4)]
    lines = block.splitlines()
    while lines[0].endswith("\\"):  # the command goes on
        lines.pop(0)
    paragraph = markdown[markdown.rindex("\n\n", 0, start - 1) : start]
    return paragraph, [line for line in lines[1:] if not line.startswith("$ ")]


def test_the_example_clients_run_matches_its_documented_output(start_app, image_server):
    """examples/segment.py against a real server: the same messages, with the same keys, as docs/protocol.md shows."""
    app = start_app()
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "segment.py"), ws_url(app), image_server.url("/photo.jpg")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    before, documented = sample_output(PROTOCOL, ".venv/bin/python examples/segment.py")
    assert "random weights" in before, "the sample output must say which model made it"

    def shape(value):
        if isinstance(value, dict):
            return {key: shape(item) for key, item in value.items()}
        if isinstance(value, list):
            return [shape(item) for item in value]
        return value if value in ("queued", "status", "result", "processing") else type(value).__name__

    ran = [shape(json.loads(line)) for line in done.stdout.splitlines()]
    assert [message["type"] for message in ran] == ["queued", "status", "result"]
    assert ran == [shape(json.loads(line)) for line in documented]


def normalised(line: str) -> str:
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", line)
    return re.sub(r"-?\d+(\.\d+)?", "N", line)


def test_the_command_line_clients_run_matches_the_readmes_sample(start_app, tmp_path, image_server):
    """python -m server.client, run with the README's arguments: the same lines, numbers aside."""
    app = start_app()
    work = tmp_path / "client"
    work.mkdir()
    (work / "scene.png").write_bytes(image_files.png_rgb(1200, 800))
    command = ".venv/bin/python -m server.client ws://localhost:8080 --image scene.png"
    before, documented = sample_output(README, command)
    assert "random weights" in before, "the sample output must say which model made it"
    arguments = re.search(re.escape(command) + r"(.*?)\n(?!\s)", README[README.index("$ " + command) :], re.S).group(1)
    done = subprocess.run(
        [sys.executable, "-m", "server.client", ws_url(app), "--image", "scene.png", *arguments.replace("\\\n", " ").split()],
        cwd=work, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    assert [normalised(line) for line in done.stdout.splitlines()] == [normalised(line) for line in documented]

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


# --- benchmarks ------------------------------------------------------------------------------


def test_docs_benchmarks_shows_the_committed_full_result():
    committed = (REPO / "bench" / "results" / "full-vm.md").read_text()
    tables = re.findall(r"^(?:\|.*\n)+", committed, re.M)
    numbers = [line.split("|")[1].strip() for line in tables[0].splitlines()[2:]]
    assert numbers[:15] == ["1", "2", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14"]
    shown = (DOCS / "benchmarks.md").read_text()
    assert [table for table in tables if table not in shown] == []
