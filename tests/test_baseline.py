"""The plain-Whisper baseline: its default protocol is the transformers ASR pipeline's (beam 5),
and the CTranslate2 backend decodes like the transformers one (same features, prompt, cap and
long-form rule). Real bundled Whisper weights on espeak speech in English and Russian."""

from __future__ import annotations

import numpy as np
import pytest

from borealis_eval.models.baseline import DEFAULT_NUM_BEAMS, SAMPLE_RATE, WhisperTranscriber, make_transcriber
from borealis_eval.models.baseline_ct2 import COMPUTE_TYPES, consume_window

REF = "bundled:whisper-base"
# Russian sentences on which bundled whisper-base's greedy and beam-5 hypotheses differ here, so
# the pipeline test fails if the harness decodes greedily.
SENTENCES = {
    "en": [("en-us+m3", "Please bring the table to the attic on Friday."),
           ("en-us+f2", "How much does the guitar cost in Houston?")],
    "ru": [("ru+f2", "Сколько стоит билет до Москвы?"),
           ("ru+m3", "Завтра будет холодно и пойдёт снег.")],
}
LONG_EN = ["Sarah called Nora on the sixteenth of June.", "Alice carried the teapot on Thursday.",
           "There are eighty six stations in Toronto now.", "The sofa is in the kitchen.",
           "Please bring the mirror to the workshop.", "How much does the guitar cost in this shop?",
           "On Monday, Liam flew to Seattle.", "If Ruby does not find the chair, we will sail to Berlin.",
           "Why did Victor fly to Phoenix on Friday?", "It was nineteen degrees in Prague.",
           "Chloe repaired the laptop in the store.", "There are thirty five parks in Cardiff.",
           "On Thursday, Ella came to Houston by train."]


def _cap(seconds: float) -> int:
    """The harness's runaway cap with the default eval settings (sweep.token_cap)."""
    from borealis_eval.config import EvalConfig

    f = EvalConfig.model_fields
    return min(f["max_new_tokens"].default, int(f["max_tokens_per_second"].default * seconds) + 16)


@pytest.fixture(scope="module")
def clips() -> dict[str, list[tuple[np.ndarray, str]]]:
    synth = pytest.importorskip("borealis_eval.data.espeak", reason="needs the espeak synthesiser")
    return {lang: [(synth.synthesize(text, voice, 140), text) for voice, text in items]
            for lang, items in SENTENCES.items()}


@pytest.fixture(scope="module")
def long_clip() -> tuple[np.ndarray, str]:
    """About 35 s of English: two windows of long-form decoding."""
    synth = pytest.importorskip("borealis_eval.data.espeak", reason="needs the espeak synthesiser")
    gap = np.zeros(SAMPLE_RATE // 3, np.float32)
    parts = [p for i, t in enumerate(LONG_EN) for p in (synth.synthesize(t, ("en-us+m3", "en-us+f2")[i % 2], 140), gap)]
    audio = np.concatenate(parts)
    assert len(audio) > 31 * SAMPLE_RATE
    return audio, " ".join(LONG_EN)


@pytest.fixture(scope="module")
def greedy():
    return WhisperTranscriber(REF, num_beams=1)


@pytest.fixture(scope="module")
def ct2():
    return pytest.importorskip("ctranslate2",
                               reason="the CTranslate2 backend needs ctranslate2 (a project dependency: pip install -e .)")


def _by_language(model, clips, num_beams=None) -> dict[str, list[str]]:
    """As evaluate_baseline does: one call per language group, capped by its longest clip."""
    return {lang: model.transcribe([a for a, _ in group], lang, num_beams,
                                   _cap(max(len(a) for a, _ in group) / SAMPLE_RATE))
            for lang, group in clips.items()}


def _wer(refs: list[str], hyps: list[str], language: str) -> float:
    from borealis_eval.evaluate.protocol import score_records

    return score_records([{"ref": r, "hyp": h} for r, h in zip(refs, hyps)], language, n_boot=100)["wer"]


# --------------------------------------------------------------------------- protocol


@pytest.mark.slow
def test_default_baseline_gives_the_pipeline_hypotheses(clips):
    """Issue 19: the harness's baseline with its defaults == transformers' ASR pipeline with its
    defaults (beam 5 there too) and the language forced, clip for clip."""
    from transformers import pipeline

    from borealis_eval.models.refs import resolve

    harness = WhisperTranscriber(REF)
    assert (harness.num_beams, harness.timestamps) == (DEFAULT_NUM_BEAMS, "auto") == (5, "auto")
    pipe = pipeline("automatic-speech-recognition", model=resolve(REF).path_or_id, device="cpu")
    assert pipe._generation_defaults["num_beams"] == 5
    ours = _by_language(harness, clips)
    for lang, group in clips.items():
        theirs = [pipe({"raw": a, "sampling_rate": SAMPLE_RATE},
                       generate_kwargs={"language": lang, "task": "transcribe"})["text"].strip() for a, _ in group]
        assert ours[lang] == theirs and all(theirs)


def test_settings_are_checked_before_loading():
    with pytest.raises(ValueError, match="num_beams"):
        WhisperTranscriber(REF, num_beams=0)
    with pytest.raises(ValueError, match="timestamps"):
        WhisperTranscriber(REF, timestamps="never")
    with pytest.raises(ValueError, match="backend ctranslate2"):
        make_transcriber(REF, "transformers", "int8")
    with pytest.raises(ValueError, match="unknown baseline backend"):
        make_transcriber(REF, "onnx")
    with pytest.raises(ValueError, match="compute_type"):
        make_transcriber(REF, "ctranslate2", "float16")
    assert set(COMPUTE_TYPES) == {"default", "int8", "int8_float32", "float32"}


def test_missing_ctranslate2_says_how_to_install(monkeypatch):
    import sys

    from borealis_eval.models.baseline_ct2 import require_ctranslate2

    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    with pytest.raises(ImportError, match="pip install 'ctranslate2"):
        require_ctranslate2()


# --------------------------------------------------------------------------- long-form rule

TS = 50364  # <|0.00|> in multilingual Whisper


def test_window_ending_with_a_single_timestamp_is_consumed_whole():
    seq = [TS, 10, 11, TS + 50, TS + 50, 12, TS + 120]  # two segments, then speech ends
    assert consume_window(seq, TS, 3000) == (seq, 3000)


def test_unfinished_last_segment_is_dropped_and_decoding_resumes_at_its_start():
    seq = [TS, 10, 11, TS + 50, TS + 50, 12, 13, TS + 700, TS + 700, 14]  # 14 is cut by the window
    kept, advance = consume_window(seq, TS, 3000)
    assert kept == seq[:9] and advance == 700 * 2  # 0.02 s per timestamp step, 2 mel frames each


def test_window_without_segment_boundary_is_consumed_whole():
    assert consume_window([10, 11, 12], TS, 2500) == ([10, 11, 12], 2500)
    assert consume_window([], TS, 2500) == ([], 2500)
    assert consume_window([TS, 10, 11, TS + 90], TS, 3000) == ([TS, 10, 11, TS + 90], 3000)


def test_boundary_at_zero_still_moves_forward():
    assert consume_window([TS, TS, 10, 11], TS, 3000)[1] == 3000


# --------------------------------------------------------------------------- CTranslate2 backend


@pytest.mark.slow
def test_ct2_float32_greedy_matches_transformers(ct2, clips, greedy):
    from borealis_eval.models.baseline_ct2 import CT2WhisperTranscriber

    fast = CT2WhisperTranscriber(REF, compute_type="float32", num_beams=1)
    assert fast.protocol()["compute_type"] == "float32" and fast.threads >= 1
    assert _by_language(fast, clips) == _by_language(greedy, clips)


@pytest.mark.slow
def test_ct2_long_form_follows_the_transformers_sequential_algorithm(ct2, long_clip, greedy):
    from borealis_eval.models.baseline_ct2 import CT2WhisperTranscriber

    audio, ref = long_clip
    fast = CT2WhisperTranscriber(REF, compute_type="float32", num_beams=1)
    ours = fast.transcribe([audio], "en", max_new_tokens=_cap(30))[0]
    assert ours == greedy.transcribe([audio], "en", max_new_tokens=_cap(30))[0]
    assert _wer([ref], [ours], "english") < 0.5  # both windows were transcribed, not just the first


@pytest.mark.slow
def test_ct2_timestamps_always_matches_transformers(ct2, clips, greedy):
    from borealis_eval.models.baseline_ct2 import CT2WhisperTranscriber

    en = {"en": clips["en"]}
    fast = CT2WhisperTranscriber(REF, compute_type="float32", num_beams=1, timestamps="always")
    greedy.timestamps = "always"
    try:
        assert _by_language(fast, en) == _by_language(greedy, en)
    finally:
        greedy.timestamps = "auto"


@pytest.mark.slow
def test_ct2_int8_english_wer_within_tolerance(ct2, clips, greedy):
    """int8 changes the arithmetic, so hypotheses may differ; on clear English speech its WER
    stays within 10 points of transformers' (a few words on these clips)."""
    from borealis_eval.models.baseline_ct2 import CT2WhisperTranscriber

    en = {"en": clips["en"]}
    refs = [t for _, t in clips["en"]]
    fast = CT2WhisperTranscriber(REF, compute_type="int8", num_beams=1)
    assert fast.protocol()["compute_type"].startswith("int8")
    ours, theirs = _by_language(fast, en)["en"], _by_language(greedy, en)["en"]
    assert _wer(refs, ours, "english") <= _wer(refs, theirs, "english") + 0.10


def _tiny_en_clip() -> np.ndarray:
    synth = pytest.importorskip("borealis_eval.data.espeak", reason="needs the espeak synthesiser")
    return synth.synthesize("How much does the guitar cost in Houston?", "en-us+m3", 150)


@pytest.fixture()
def ct2_cache(tmp_path, monkeypatch):
    """A private cache for converted models (bundled HF imports stay in the shared cache)."""
    import borealis_eval.paths

    monkeypatch.setattr(borealis_eval.paths, "cache_root", lambda: tmp_path / "cache")
    return tmp_path / "cache" / "ct2"


@pytest.mark.slow
def test_local_hf_folder_is_converted_once_and_decodes_like_the_bundled_files(ct2, ct2_cache, tmp_path):
    import shutil

    from borealis_eval.models.bundled import prepare
    from borealis_eval.models.baseline_ct2 import CT2WhisperTranscriber, _folder_digest, ct2_model_dir

    folder = tmp_path / "tiny-en"
    shutil.copytree(prepare("whisper-tiny.en", progress=False), folder)
    converted = ct2_model_dir(str(folder))
    assert converted.parent == ct2_cache and (converted / "model.bin").is_file()
    stamp = (converted / ".borealis_complete").stat().st_mtime_ns
    assert ct2_model_dir(str(folder)) == converted  # cached: not converted again
    assert (converted / ".borealis_complete").stat().st_mtime_ns == stamp
    digest = _folder_digest(folder)
    (folder / "README.md").write_text("changed")
    assert _folder_digest(folder) != digest  # an edited folder gets a new key
    clip = _tiny_en_clip()
    ours = CT2WhisperTranscriber(str(folder), compute_type="float32", num_beams=1).transcribe([clip], None)
    bundled = CT2WhisperTranscriber("bundled:whisper-tiny.en", compute_type="float32", num_beams=1).transcribe([clip], None)
    assert ours == bundled and "houston" in ours[0].lower()


@pytest.mark.slow
def test_hub_ref_converts_the_cached_snapshot_offline(ct2, ct2_cache, tmp_path, monkeypatch):
    """An hf: reference goes through the local HF cache (the hub is unreachable here): the
    snapshot's commit is part of the cache key."""
    from borealis_eval.models.bundled import prepare
    from borealis_eval.models.baseline_ct2 import CT2WhisperTranscriber

    hub = tmp_path / "hub"
    repo = hub / "models--acme--whisper-tiny.en"
    snap = repo / "snapshots" / "0123456789abcdef0123"
    snap.mkdir(parents=True)
    for f in prepare("whisper-tiny.en", progress=False).iterdir():
        if not f.name.startswith("."):
            (snap / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snap.name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    fast = CT2WhisperTranscriber("hf:acme/whisper-tiny.en", compute_type="float32", num_beams=1)
    assert fast.model_dir.name == "hf-acme--whisper-tiny.en-0123456789abcdef"
    assert "houston" in fast.transcribe([_tiny_en_clip()], None)[0].lower()
