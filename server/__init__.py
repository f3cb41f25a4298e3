"""CAP: a WebSocket service that turns boxes on an image into SAM masks."""

import sys
from pathlib import Path

__version__ = "0.1.0"


def program_name(module: str) -> str:
    """How this command was run: an installed script's name (`cap`, `cap-client`), else `python -m module`."""
    name = Path(sys.argv[0]).name
    return f"python -m {module}" if name.endswith(".py") or name in ("", "-c") else name


def working_in_clone() -> bool:
    """Whether the working folder is where this code lives (a clone, or the Docker image's /app), not an installed copy."""
    return Path("server").resolve() == Path(__file__).resolve().parent
