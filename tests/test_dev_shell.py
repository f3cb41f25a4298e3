"""env.nix, env.sh and scripts/deploy: parsed, linted, and run with stand-ins for docker, scp and ssh."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DEPLOYING = (REPO / "docs" / "deploying.md").read_text()
ENV_NIX = (REPO / "env.nix").read_text()
ALIASES = {
    "cap:dev": "scripts/run",
    "cap:test": "scripts/test",
    "cap:audit": "scripts/run audit",
    "cap:prod:build": "scripts/deploy build",
    "cap:prod:send": "scripts/deploy send",
    "cap:prod:run": "scripts/deploy run",
}


def tool(name: str, package: str) -> str:
    """The tool's path; a failure naming the package when it is missing (./scripts/test installs it as root)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (./scripts/test does it when run as root)")
    return path


def test_env_nix_parses():
    done = subprocess.run([tool("nix-instantiate", "nix-bin"), "--parse", "env.nix"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_shell_scripts_pass_shellcheck():
    shellcheck = tool("shellcheck", "shellcheck")
    scripts = ["env.sh", "scripts/deploy", "scripts/run", "scripts/test"]
    for args in (["-x", *scripts], ["--shell=bash", "scripts/common.sh"]):
        done = subprocess.run([shellcheck, *args], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_the_shell_defines_greets_with_and_the_readme_documents_every_alias():
    defined = dict(re.findall(r"alias (cap:[\w:]+)='\$\{root\}/([^']+)'", ENV_NIX))
    assert defined == ALIASES
    greeting = ENV_NIX.split("<<'GREETING'", 1)[1].split("GREETING", 1)[0]
    for alias, command in ALIASES.items():
        assert os.access(REPO / command.split()[0], os.X_OK), command
        assert f"  {alias} " in greeting, f"the greeting does not list {alias}"
        rows = [line for line in README.splitlines() if line.startswith(f"| `{alias}")]
        assert rows and f"`./{command}" in rows[0], f"README: no row for {alias} with its plain command ./{command}"


def deploy(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """scripts/deploy with docker, scp and ssh replaced by stand-ins that log their arguments and input."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("docker", "scp", "ssh"):
        stand_in = bin_dir / name
        stand_in.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/calls"\n[ -t 0 ] || cat >> "{tmp_path}/calls"\n')
        stand_in.chmod(0o755)
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), **env}
    return subprocess.run(
        [str(REPO / "scripts" / "deploy"), *args], env=environment, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def calls(tmp_path: Path) -> str:
    return (tmp_path / "calls").read_text()


def test_deploy_run_prints_exactly_the_commands_docs_deploying_shows(tmp_path):
    done = deploy(tmp_path, "run")
    assert done.returncode == 0, done.stderr
    assert "docker load -i cap-image.tar\n" in done.stdout
    assert "--gpus all -p 8080:8080" in done.stdout and "-v /srv/cap/checkpoints:/checkpoints:ro" in done.stdout
    # The checkpoint is fetched with the server's own settings (a vit_b cap.env fetches vit_b), before it starts.
    lines = done.stdout.splitlines()
    fetch = next(i for i, line in enumerate(lines) if line.endswith("python -m server download-checkpoint"))
    assert "--env-file /srv/cap/cap.env -v /srv/cap/checkpoints:/checkpoints cap " in lines[fetch]
    assert fetch < next(i for i, line in enumerate(lines) if line.startswith("docker run -d"))
    assert f"```\n{done.stdout}```" in DEPLOYING
    assert not (tmp_path / "calls").exists()  # printing runs nothing


def test_deploy_run_publishes_the_port_where_cap_publish_says(tmp_path):
    """Behind a reverse proxy, on loopback only: Docker's published ports bypass ufw (docs/deploying.md)."""
    default = deploy(tmp_path, "run").stdout
    loopback = deploy(tmp_path, "run", CAP_PUBLISH="127.0.0.1:8080:8080").stdout
    assert loopback == default.replace(" -p 8080:8080 ", " -p 127.0.0.1:8080:8080 ") != default
    assert "CAP_PUBLISH=127.0.0.1:8080:8080 ./scripts/deploy run" in DEPLOYING
    wrong = deploy(tmp_path, "run", CAP_PUBLISH="8080; rm -rf /")
    assert wrong.returncode == 2 and wrong.stdout == "" and "CAP_PUBLISH is docker run's -p" in wrong.stderr


def test_deploy_build_send_and_run_over_ssh(tmp_path):
    assert deploy(tmp_path, "build").returncode == 0
    # An image for the GPU server's x86-64, whatever machine builds it (an Apple silicon Mac, say).
    assert calls(tmp_path) == "docker build --platform linux/amd64 -t cap .\ndocker save -o cap-image.tar cap\n"

    (tmp_path / "calls").unlink()
    assert deploy(tmp_path, "send", CAP_SERVER="ubuntu@203.0.113.7").returncode == 0
    assert calls(tmp_path) == f"scp -i {tmp_path}/.ssh/cap_key.pem cap-image.tar ubuntu@203.0.113.7:\n"

    (tmp_path / "calls").unlink()
    printed = deploy(tmp_path, "run").stdout
    done = deploy(tmp_path, "run", "--ssh", CAP_SERVER="ubuntu@203.0.113.7", CAP_SSH_KEY="/keys/cap.pem")
    assert done.returncode == 0, done.stderr
    assert calls(tmp_path) == f"ssh -i /keys/cap.pem ubuntu@203.0.113.7 bash -euo pipefail\n{printed}"


@pytest.mark.parametrize("args", [("send",), ("run", "--ssh")])
def test_deploy_asks_for_cap_server_instead_of_guessing(tmp_path, args):
    done = deploy(tmp_path, *args)
    assert done.returncode == 2 and "Set CAP_SERVER" in done.stderr
    assert not (tmp_path / "calls").exists()


def test_deploy_without_a_command_shows_its_usage(tmp_path):
    done = deploy(tmp_path)
    assert done.returncode == 2 and "scripts/deploy run --ssh" in done.stderr


def install_venv(folder: Path, *files: str) -> list[str]:
    """scripts/common.sh's install_venv in `folder`, whose .venv/bin/python is a stand-in; the pip calls it made."""
    log = folder / "pip-calls"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f'source "{REPO}/scripts/common.sh"; install_venv "$@"', "install_venv", *files],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_run_and_test_do_not_reinstall_each_other(tmp_path):
    (tmp_path / "requirements").mkdir()
    for name in ("torch", "build", "runtime", "test"):
        (tmp_path / "requirements" / f"{name}.txt").write_text(f"{name}==1.0\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/pip-calls"\n')
    python.chmod(0o755)
    runtime, test = "requirements/runtime.txt", "requirements/test.txt"

    first = install_venv(tmp_path, runtime, test)  # ./scripts/test
    assert [call.split(" -r ", 1)[1] for call in first] == [
        "requirements/torch.txt -r requirements/build.txt", f"{runtime} -r {test}"
    ]
    assert "--no-build-isolation" in first[1]  # sam2 builds against the venv's torch, not a second one
    assert "--quiet" not in first[0]  # torch's download shows its progress
    assert install_venv(tmp_path, runtime) == []  # ./scripts/run after it: a subset, installed
    assert install_venv(tmp_path, runtime, test) == []  # and ./scripts/test again
    (tmp_path / "requirements" / "runtime.txt").write_text("runtime==1.1\n")
    assert len(install_venv(tmp_path, runtime)) == 2  # a changed file is installed again
    assert install_venv(tmp_path, runtime, test) == []  # test.txt is still the one installed
