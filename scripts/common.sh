# Shared by scripts/run and scripts/test: sourced, not run.

# Create .venv/ and install the pinned requirements, torch (and the build
# tools sam2's source build needs, requirements/build.txt) first. The stamp
# .venv/.cap-requirements holds one "sha256  file" line per requirements file
# installed, so the install is skipped when every file asked for is there
# unchanged: ./scripts/run (runtime) after ./scripts/test (runtime + test)
# installs nothing, and neither does the reverse.
#   install_venv requirements/runtime.txt [requirements/test.txt ...]
install_venv() {
    local files=(requirements/torch.txt requirements/build.txt "$@")
    local stamp=.venv/.cap-requirements file missing=()
    for file in "${files[@]}"; do
        grep -qxF "$(sha256sum "$file")" "$stamp" 2>/dev/null || missing+=("$file")
    done
    if [ -x .venv/bin/python ] && [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    if [ ! -x .venv/bin/python ]; then
        "${PYTHON:-python3}" -m venv .venv || {
            echo "Could not create .venv with ${PYTHON:-python3}: install Python 3.11 and its venv module (apt-get install python3-venv)." >&2
            return 1
        }
        rm -f "$stamp"
    fi
    echo "Installing ${missing[*]} into .venv (the first time, torch and its CUDA libraries download about 5 GB)..." >&2
    # torch first, with pip's progress shown: it is the long part.
    .venv/bin/python -m pip install --disable-pip-version-check --progress-bar on -r requirements/torch.txt -r requirements/build.txt
    local args=()
    for file in "$@"; do args+=(-r "$file"); done
    # sam2 builds from source against the torch just installed, with no CUDA extension (see runtime.txt).
    SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation "${args[@]}"
    # Keep the lines of files still installed as they are; add the ones just installed.
    {
        if [ -f "$stamp" ]; then
            while read -r line; do
                if printf '%s\n' "$line" | sha256sum --check --status 2>/dev/null; then printf '%s\n' "$line"; fi
            done < "$stamp"
        fi
        sha256sum "${files[@]}"
    } | sort -u > "$stamp.new"
    mv "$stamp.new" "$stamp"
}

# tcmalloc makes SAM on the CPU 2-5x faster. Install it when we can (root
# with apt-get), preload it when it is there, and carry on without it if not.
# The Nix shell (env.nix) names its own in CAP_TCMALLOC, which ldconfig cannot see.
preload_tcmalloc() {
    # awk reads ldconfig's whole output: an early exit would kill ldconfig
    # with SIGPIPE, which `set -o pipefail` makes fatal to the caller.
    local lib=${CAP_TCMALLOC:-}
    [ -n "$lib" ] || lib=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 / && !lib {lib = $NF} END {print lib}')
    if [ -z "$lib" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing libtcmalloc-minimal4 (faster SAM on the CPU)..." >&2
        { apt-get install -y -q libtcmalloc-minimal4 || { apt-get update -q && apt-get install -y -q libtcmalloc-minimal4; }; } >/dev/null 2>&1 || true
        lib=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 / && !lib {lib = $NF} END {print lib}')
    fi
    if [ -n "$lib" ]; then
        export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
    else
        echo "Note: libtcmalloc-minimal4 is not installed; SAM runs slower on the CPU without it." >&2
    fi
}

# The Cosmos DB emulator the tests start: @vercel/cosmosdb-server, pinned in
# tests/cosmos_emulator/package-lock.json, installed with npm ci (Node.js
# from apt-get when it is missing and we are root).
install_cosmos_emulator() {
    local folder=tests/cosmos_emulator stamp=tests/cosmos_emulator/node_modules/.cap-lock
    if ! command -v npm >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing Node.js and npm (for the Cosmos DB emulator)..." >&2
        { apt-get install -y -q nodejs npm || { apt-get update -q && apt-get install -y -q nodejs npm; }; } >/dev/null 2>&1
    fi
    command -v npm >/dev/null || { echo "npm is required for the Cosmos DB emulator: install Node.js and npm." >&2; return 1; }
    if [ "$(sha256sum "$folder/package-lock.json" | cut -d' ' -f1)" != "$(cat "$stamp" 2>/dev/null || true)" ]; then
        echo "Installing the Cosmos DB emulator (npm ci)..." >&2
        (cd "$folder" && npm ci --silent --no-audit --no-fund)
        sha256sum "$folder/package-lock.json" | cut -d' ' -f1 > "$stamp"
    fi
}

# Label Studio (requirements/label-studio.txt) for tests/test_label_studio.py, in
# .venv-label-studio/ of its own: it pins its own Django and numpy. The stamp
# .venv-label-studio/.cap-requirements holds the "sha256  file" line of the file
# installed, so a second run installs nothing.
install_label_studio() {
    local file=requirements/label-studio.txt stamp=.venv-label-studio/.cap-requirements
    if [ -x .venv-label-studio/bin/label-studio ] && grep -qxF "$(sha256sum "$file")" "$stamp" 2>/dev/null; then
        return 0
    fi
    echo "Installing Label Studio into .venv-label-studio (the first time, about 1 GB)..." >&2
    [ -x .venv-label-studio/bin/python ] || "${PYTHON:-python3}" -m venv .venv-label-studio
    .venv-label-studio/bin/python -m pip install --quiet --disable-pip-version-check -r "$file"
    sha256sum "$file" > "$stamp"
}

# The page's tests drive Debian's chromium through Playwright (never
# `playwright install`, which downloads a browser of its own). Installed from
# apt-get when it is missing and we are root; without it those tests skip.
install_chromium() {
    if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing chromium (for the page's browser tests)..." >&2
        { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 || true
    fi
    [ -x /usr/bin/chromium ] || echo "Note: /usr/bin/chromium is missing; the page's browser tests will be skipped." >&2
}

# The static checks of the shell scripts and env.nix need shellcheck and
# nix-instantiate (Debian's nix-bin). Installed from apt-get when missing and
# we are root; without them those tests fail, saying what to install, because
# a check that skips itself in CI checks nothing.
install_lint_tools() {
    local missing=()
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    command -v nix-instantiate >/dev/null || missing+=(nix-bin)
    if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing ${missing[*]} (for the shell script and env.nix checks)..." >&2
        { apt-get install -y -q "${missing[@]}" || { apt-get update -q && apt-get install -y -q "${missing[@]}"; }; } >/dev/null 2>&1 || true
    fi
}
