"""Whisper baseline on the CTranslate2 runtime (the engine behind faster-whisper).

Same protocol as the transformers backend (`borealis_eval.models.baseline`): the same log-mel
features (transformers' `WhisperFeatureExtractor`; ctranslate2 itself takes features, it does
not compute them), the language forced per clip, beam search or greedy, the runaway cap as the
new-token limit, and the same sequential long-form algorithm.

Weights, cached under `cache_root()/ct2/<key>` (built once, atomically, under a file lock):
- `bundled:<whisper>`: the packages already ship CTranslate2 files; model.bin is assembled from
  its pieces (`ct2_files.write_ct2_folder`), no conversion. Key: the model.bin checksum.
- `hf:<repo>[@rev]`: the snapshot in the local Hugging Face cache (downloaded when the hub is
  reachable), converted with ctranslate2's `TransformersConverter`. Key: repo + snapshot commit.
- a local folder (saved with save_pretrained): converted the same way. Key: the digest of its
  files' contents, so a folder overwritten in place is converted again.
The stored precision is the source's (fp16 for the bundled files); `compute_type` picks the
arithmetic at load time (int8 quantises the weights then).

Long-form (clips over 30 s, and every clip with timestamps "always"): the sequential algorithm
of OpenAI's `transcribe` as transformers implements it, not conditioned on the previous window:
log-mel over the whole recording, a 30 s window (zero-padded to 3000 frames) from `seek`,
decoded with timestamp tokens; `consume_window` keeps the completed segments and moves `seek`
to the last timestamp, or past the window when it ends with a single timestamp or has no
segment boundary. ctranslate2 applies Whisper's timestamp rules itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from borealis_eval.atomic import building_folder
from borealis_eval.models.baseline_protocol import DEFAULT_NUM_BEAMS, SAMPLE_RATE, Timestamps, check_decoding

COMPUTE_TYPES: tuple[str, ...] = ("default", "int8", "int8_float32", "float32")
SEGMENT_FRAMES = 3000  # Whisper's 30 s window in log-mel frames
INPUT_STRIDE = 2  # log-mel frames per timestamp step (0.02 s)
MAX_NEW_TOKENS = 440  # as the transformers backend: Whisper's 448 positions less the prompt
_MARKER = ".borealis_complete"
_HF_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]  # what the converter and the processor read


def require_ctranslate2():
    try:
        import ctranslate2
    except ImportError as e:
        raise ImportError("the ctranslate2 baseline backend needs the ctranslate2 package: "
                          "pip install 'ctranslate2>=4.4'") from e
    return ctranslate2


# --------------------------------------------------------------------------- model folders


def _folder_digest(folder: Path) -> str:
    """sha256 over the names and contents of a folder's files (hidden files skipped)."""
    h = hashlib.sha256()
    files = [q for q in folder.rglob("*") if q.is_file()]
    for p in sorted(q for q in files if not any(part.startswith(".") for part in q.relative_to(folder).parts)):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _convert(src: Path, dest: Path) -> dict:
    require_ctranslate2()
    from ctranslate2.converters import TransformersConverter

    copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (src / f).is_file()]
    TransformersConverter(str(src), copy_files=copy).convert(str(dest), force=True)
    return {"converted_from": str(src)}


def _hf_snapshot(repo: str, revision: str | None) -> Path:
    """The local snapshot folder of a hub model (from the HF cache; downloaded if the hub is reachable)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, revision=revision, allow_patterns=_HF_FILES))


def ct2_model_dir(ref: str) -> Path:
    """A CTranslate2 folder for the Whisper model `ref` (bundled:, hf: or a local folder), built once."""
    from borealis_eval.models import ct2_files
    from borealis_eval.models.refs import ModelRefError, check_available

    r = check_available(ref)
    if r.kind == "bundled":
        src = ct2_files.SOURCES.get(r.path_or_id)
        if src is None:
            raise ModelRefError(f"{ref} is not a bundled Whisper model; known: "
                                + ", ".join(f"bundled:{n}" for n in sorted(ct2_files.SOURCES)))

        def assemble(dest: Path) -> dict:
            ct2_files.write_ct2_folder(src.name, dest)  # checks the model.bin checksum
            return {"bundled": src.name, "packages": src.versions(), "model_bin_sha256": src.sha256}

        return _cached(f"bundled-{src.name}-{src.sha256[:16]}", assemble)
    if r.kind == "hf":
        snap = _hf_snapshot(r.path_or_id, r.revision)
        if not any(snap.glob("*.safetensors")):
            raise ModelRefError(f"{ref}: the snapshot {snap} has no .safetensors weights to convert")
        key = f"hf-{r.path_or_id.replace('/', '--')}-{snap.name[:16]}"
        return _cached(key, lambda dest: {"ref": ref, "commit": snap.name, **_convert(snap, dest)})
    src_dir = Path(r.path_or_id)
    key = f"local-{src_dir.name}-{_folder_digest(src_dir)[:16]}"
    return _cached(key, lambda dest: {"ref": ref, **_convert(src_dir, dest)})


def _cached(key: str, build) -> Path:
    """`cache_root()/ct2/<key>`, built by `build(tmp_folder)` the first time (atomic, process-safe)."""
    from filelock import FileLock

    from borealis_eval.paths import cache_root

    final = cache_root() / "ct2" / key
    if (final / _MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{key}.lock")):
        if (final / _MARKER).is_file():
            return final
        t0 = time.perf_counter()
        with building_folder(final) as tmp:  # replaces an unfinished earlier attempt (no marker)
            record = build(tmp) or {}
            record.update(key=key, seconds=round(time.perf_counter() - t0, 2),
                          created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            (tmp / _MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return final


# --------------------------------------------------------------------------- long-form rule


def consume_window(seq: list[int], timestamp_begin: int, window_frames: int) -> tuple[list[int], int]:
    """Tokens to keep from one decoded window and how many log-mel frames to advance.

    Whisper's sequential rule (OpenAI `transcribe`, transformers `_retrieve_segment`): segments
    end at two consecutive timestamp tokens. If the window's output ends with a single timestamp
    (speech ended) or has no segment boundary, everything is kept and the whole window consumed;
    otherwise the unfinished last segment is dropped and decoding resumes at the last boundary.
    """
    is_ts = [t >= timestamp_begin for t in seq]
    boundaries = [i + 1 for i in range(len(seq) - 1) if is_ts[i] and is_ts[i + 1]]
    if not boundaries or is_ts[-2:] == [False, True]:
        return list(seq), window_frames
    end = boundaries[-1]  # the last consecutive pair is seq[end - 1], seq[end]
    advance = (seq[end - 1] - timestamp_begin) * INPUT_STRIDE
    # a boundary at 0.00 would not move; transformers would loop there, we move past the window
    return list(seq[: end + 1]), advance if advance > 0 else window_frames


# --------------------------------------------------------------------------- transcriber


class CT2WhisperTranscriber:
    """Drop-in for `WhisperTranscriber` (same `transcribe`) on ctranslate2.

    `threads` (ctranslate2's intra_threads) defaults to torch's thread count, so both backends
    run under the same thread setting of the harness."""

    backend = "ctranslate2"

    def __init__(self, ref: str, device: str | torch.device = "cpu", compute_type: str = "default",
                 num_beams: int = DEFAULT_NUM_BEAMS, timestamps: Timestamps = "auto", threads: int | None = None):
        from transformers import WhisperProcessor

        from borealis_eval.models.refs import resolve

        check_decoding(num_beams, timestamps)
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"compute_type must be one of {COMPUTE_TYPES}, got {compute_type!r}")
        ct2 = require_ctranslate2()
        self.ref, self.compute_type = ref, compute_type
        self.num_beams, self.timestamps = num_beams, timestamps
        self.model_dir = ct2_model_dir(ref)
        r = resolve(ref)  # the tokenizer and feature extractor of the same model (bundled: imported once)
        self.processor = WhisperProcessor.from_pretrained(r.path_or_id, **r.kwargs())
        dev = torch.device(device)
        self.threads = threads or torch.get_num_threads()
        self.model = ct2.models.Whisper(str(self.model_dir), device=dev.type, device_index=dev.index or 0,
                                        compute_type=compute_type, intra_threads=self.threads if dev.type == "cpu" else 0)
        tok = self.processor.tokenizer
        self.multilingual = self.model.is_multilingual
        self.eot = tok.convert_tokens_to_ids("<|endoftext|>")
        self.sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
        self.transcribe_id = tok.convert_tokens_to_ids("<|transcribe|>")
        self.no_timestamps = tok.convert_tokens_to_ids("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1

    def protocol(self) -> dict:
        """The decoding settings; compute_type is the one ctranslate2 runs ("default" resolved)."""
        return {"backend": self.backend, "compute_type": self.model.compute_type, "num_beams": self.num_beams,
                "timestamps": self.timestamps, "threads": self.threads}

    def _language_id(self, language: str) -> int:
        from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

        code = language.strip("<|>").lower()
        code = TO_LANGUAGE_CODE.get(code, code)
        tid = self.processor.tokenizer.convert_tokens_to_ids(f"<|{code}|>")
        if tid is None or tid == self.processor.tokenizer.unk_token_id:
            raise ValueError(f"Whisper has no language token for {language!r}")
        return tid

    def _prompts(self, feats: np.ndarray, language: str | None, timestamps: bool) -> list[list[int]]:
        tail = [] if timestamps else [self.no_timestamps]
        if not self.multilingual:
            return [[self.sot, *tail]] * len(feats)
        if language is None:  # as transformers: detect per clip from its first window
            langs = [r[0][0] for r in self.model.detect_language(self._storage(feats))]
            ids = [self._language_id(lang) for lang in langs]
        else:
            ids = [self._language_id(language)] * len(feats)
        return [[self.sot, lid, self.transcribe_id, *tail] for lid in ids]

    @staticmethod
    def _storage(feats: np.ndarray):
        import ctranslate2

        return ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32))

    def _generate(self, feats: np.ndarray, prompts: list[list[int]], num_beams: int, max_new: int) -> list[list[int]]:
        # ctranslate2 allows min(max_length // 2, max_length - len(prompt) + 1) new tokens
        max_length = max(2 * max_new, max_new + len(prompts[0]) - 1)
        res = self.model.generate(self._storage(feats), prompts, beam_size=num_beams, max_length=max_length)
        return [r.sequences_ids[0] for r in res]

    def _sequential(self, feats: np.ndarray, language: str | None, num_beams: int, max_new: int) -> list[int]:
        """Long-form decoding of one recording's log-mel (n_mels, frames); see the module docstring."""
        n_mels, total = feats.shape
        kept: list[int] = []
        prompts = None
        seek = 0
        while seek < total:
            num = min(SEGMENT_FRAMES, total - seek)
            window = np.zeros((1, n_mels, SEGMENT_FRAMES), np.float32)
            window[0, :, :num] = feats[:, seek : seek + num]
            prompts = prompts or self._prompts(window, language, timestamps=True)  # language detected once
            seq = self._generate(window, prompts, num_beams, max_new)[0]
            tokens, advance = consume_window(seq, self.timestamp_begin, num)
            kept += tokens
            seek += advance
        return kept

    def _text(self, ids: list[int]) -> str:
        return self.processor.tokenizer.decode([t for t in ids if t < self.eot], skip_special_tokens=True).strip()

    def transcribe(self, waves: list[np.ndarray], language: str | None, num_beams: int | None = None,
                   max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        """As `WhisperTranscriber.transcribe`: `max_new_tokens` caps each clip (each window in long-form)."""
        beams = self.num_beams if num_beams is None else num_beams
        cap = min(max_new_tokens, MAX_NEW_TOKENS)
        fe = self.processor.feature_extractor
        out: list[str | None] = [None] * len(waves)
        short = [i for i, w in enumerate(waves) if len(w) <= 30 * SAMPLE_RATE]
        if short:
            feats = fe([waves[i] for i in short], sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
            if self.timestamps == "always":  # as transformers: the padded 30 s input through the sequential rule
                seqs = [self._sequential(f, language, beams, cap) for f in feats]
            else:
                seqs = self._generate(feats, self._prompts(feats, language, timestamps=False), beams, cap)
            for i, seq in zip(short, seqs):
                out[i] = self._text(seq)
        for i, w in enumerate(waves):
            if out[i] is None:
                feats = fe(w, sampling_rate=SAMPLE_RATE, return_tensors="np", truncation=False,
                           padding="longest").input_features[0]
                out[i] = self._text(self._sequential(feats, language, beams, cap))
        return out  # type: ignore[return-value]
