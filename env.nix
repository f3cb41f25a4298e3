# CAP's development shell. Open it with ./env.sh (that is, nix-shell env.nix).
# Python packages still come from PyPI, pinned, into .venv (./scripts/run and
# ./scripts/test create it): the shell provides the tools around them.
{ pkgs ? import <nixpkgs> { } }:

let
  root = toString ./.;
in
pkgs.mkShell {
  packages = with pkgs; [
    python311      # .venv is created with it
    nodejs         # the Cosmos DB emulator the tests start
    shellcheck     # tests lint env.sh and scripts/
    hadolint       # tests lint the Dockerfile (also pinned in requirements/test.txt)
    nix            # nix-instantiate, for the test that parses this file
    docker-client  # cap:prod:build
    openssh        # cap:prod:send, cap:prod:run
    gperftools     # tcmalloc, preloaded by ./scripts/run
    curl
    websocat       # talk to the server by hand (README, the protocol)
    git
  ];

  shellHook = ''
    export PYTHON=${pkgs.python311}/bin/python3.11
    # PyPI's wheels (torch, pycocotools) link against these.
    export LD_LIBRARY_PATH=${pkgs.lib.makeLibraryPath [ pkgs.stdenv.cc.cc.lib pkgs.zlib ]}''${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export CAP_TCMALLOC=${pkgs.gperftools}/lib/libtcmalloc_minimal.so.4
    export CAP_SSH_KEY=''${CAP_SSH_KEY:-$HOME/.ssh/cap_key.pem}

    alias cap:dev='${root}/scripts/run'
    alias cap:test='${root}/scripts/test'
    alias cap:audit='${root}/scripts/run audit'
    alias cap:prod:build='${root}/scripts/deploy build'
    alias cap:prod:send='${root}/scripts/deploy send'
    alias cap:prod:run='${root}/scripts/deploy run'

    cat <<'GREETING'
CAP development shell. Commands:
  cap:dev              run the server on :8080 (./scripts/run)
  cap:test             install everything and run the tests (./scripts/test)
  cap:audit            list records that break the order invariant (./scripts/run audit)
  cap:prod:build       docker build, then docker save -o cap-image.tar (scripts/deploy build)
  cap:prod:send        scp cap-image.tar to $CAP_SERVER with $CAP_SSH_KEY (scripts/deploy send)
  cap:prod:run [--ssh] print the docker load and docker run commands; --ssh runs them on $CAP_SERVER
Set CAP_SERVER=user@host for the cap:prod:* commands. README.md has the rest.
GREETING
  '';
}
