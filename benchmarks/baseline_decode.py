"""1. Baseline decoding: the harness's Whisper baseline vs a plain transformers pipeline loop.

Same model (bundled whisper-base, fp32), same English test clips (a seeded subset of test_en),
same greedy settings (num_beams 1, no sampling, language forced to English, task transcribe)
and the same new-token cap per clip (the cap the harness gives the clip's batch:
min(max_new_tokens, 15 tokens/s x longest clip + 16)). Both sides exclude one untimed warm-up.
- harness: `decode.evaluate_baseline` unchanged (duration-sorted batches of
  `eval.baseline.batch_size`, `WhisperTranscriber`), with an empty decode cache;
- pipeline: `pipeline("automatic-speech-recognition", model=<folder>)` called clip by clip
  (`_pipeline_transcriber`), interleaved batch by batch with the harness (`side_interleaved`).
WER of both under the English normaliser (`score_records`).
"""

from __future__ import annotations

import time

NAME = "baseline_decode"
TITLE = "Baseline Whisper decoding: harness vs transformers pipeline loop"
TARGET = 1.5
SIDE_KEYS = ["rtfx", "decode_seconds", "wer"]  # shown per side in the README table


def _records(es, hyps: dict[str, str]) -> list[dict]:
    return [{"id": it.id, "ref": it.text, "hyp": hyps[it.id]} for it in es.items]


def _batches(cfg, es) -> list[list]:
    """The duration-sorted batches of `eval.baseline.batch_size` the harness decodes."""
    order = sorted(es.items, key=lambda it: -es.durations[it.id])
    bs = cfg.eval.baseline.batch_size
    return [order[s : s + bs] for s in range(0, len(order), bs)]


def _caps(cfg, es) -> dict[str, int]:
    """Per clip, the token cap of the batch the harness decodes it in."""
    from borealis_eval.decode import token_cap

    caps = {}
    for batch in _batches(cfg, es):
        cap = token_cap(cfg, min(30.0, max(es.durations[it.id] for it in batch)))
        caps.update({it.id: cap for it in batch})
    return caps


def _pipeline_transcriber(cfg, es, caps: dict[str, int]):
    """A transformers ASR pipeline on the same model, called clip by clip with the harness's settings."""
    import torch
    from transformers import pipeline

    from benchmarks.common import SAMPLE_RATE
    from borealis_eval.models.refs import resolve

    pipe = pipeline("automatic-speech-recognition", model=resolve(cfg.eval.baseline.ref).path_or_id,
                    device="cpu", dtype=torch.float32)

    def transcribe(item_id: str) -> str:
        out = pipe({"raw": es.waves[item_id], "sampling_rate": SAMPLE_RATE},
                   generate_kwargs={"language": "en", "task": "transcribe", "num_beams": cfg.eval.num_beams,
                                    "do_sample": False, "max_new_tokens": caps[item_id]})
        return out["text"].strip()

    return transcribe


def side_harness(n_clips: int) -> dict:
    import tempfile

    import torch

    from benchmarks.common import cpu_config, eval_set
    from borealis_eval.evaluate.protocol import score_records
    from borealis_eval.evaluate.decode_cache import DecodeCache
    from borealis_eval.decode import evaluate_baseline
    from borealis_eval.resources import Resources

    cfg = cpu_config()
    es = eval_set(cfg, "test_en", n_clips)
    with tempfile.TemporaryDirectory() as tmp:
        res = Resources(cfg, torch.device("cpu"), [], [], [es], None, None, decodes=DecodeCache(tmp))
        t = time.perf_counter()
        r = evaluate_baseline(res, cfg)[0]
        wall = time.perf_counter() - t
    hyps = {x["id"]: x["hyp"] for x in r.records}
    audio = r.metrics["audio_seconds"]
    return {"clips": len(es.items), "audio_seconds": round(audio, 2), "rtfx": round(r.metrics["rtfx"], 3),
            "decode_seconds": round(audio / r.metrics["rtfx"], 3), "wall_incl_load_warmup_s": round(wall, 3),
            "batch_size": cfg.eval.baseline.batch_size,
            "wer": score_records(_records(es, hyps), "english", n_boot=100)["wer"], "hyps": hyps,
            "torch_threads": torch.get_num_threads()}


def side_profile(n_clips: int) -> dict:
    """Where the harness's time goes: one batch of its longest clips, encoder alone vs transcribe.

    A by-hand probe behind the README's log-mel figure, not part of `run()`:
    `python -m benchmarks._side baseline_decode profile '{"n_clips": 24}'`."""
    import torch

    from benchmarks.common import cpu_config, eval_set
    from borealis_eval.models.baseline import WhisperTranscriber
    from borealis_eval.decode import token_cap

    cfg = cpu_config()
    es = eval_set(cfg, "test_en", n_clips)
    bs = cfg.eval.baseline.batch_size
    batch = sorted(es.waves.values(), key=len, reverse=True)[:bs]
    cap = token_cap(cfg, len(batch[0]) / 16_000)
    w = WhisperTranscriber(cfg.eval.baseline.ref)
    w.transcribe(batch[:2], "en", 1, cap)  # warm-up
    t = time.perf_counter()
    w.transcribe(batch, "en", 1, cap)
    total = time.perf_counter() - t
    t = time.perf_counter()
    feats = w.processor.feature_extractor(batch, sampling_rate=16_000, return_tensors="pt").input_features
    mel = time.perf_counter() - t
    with torch.inference_mode():
        t = time.perf_counter()
        w.model.model.encoder(feats)
        enc = time.perf_counter() - t
    return {"batch_size": len(batch), "transcribe_s": round(total, 3), "mel_s": round(mel, 3),
            "encoder_s": round(enc, 3), "encoder_share": round(enc / total, 3),
            "attn_implementation": getattr(w.model.config, "_attn_implementation", None)}


def side_interleaved(n_clips: int) -> dict:
    """Both systems in one process, batch by batch (alternating which goes first), so load from
    other jobs on a shared machine falls on both sides alike. The harness side is
    `WhisperTranscriber.transcribe` on exactly the batches and caps `evaluate_baseline` forms."""
    import torch

    from benchmarks.common import SAMPLE_RATE, cpu_config, eval_set, peak_rss_mb
    from borealis_eval.evaluate.protocol import score_records
    from borealis_eval.models.baseline import WhisperTranscriber

    cfg = cpu_config()
    es = eval_set(cfg, "test_en", n_clips)
    caps = _caps(cfg, es)
    batches = _batches(cfg, es)
    whisper = WhisperTranscriber(cfg.eval.baseline.ref)
    whisper.transcribe([es.waves[it.id] for it in batches[-1][:2]], "en", 1, caps[batches[-1][0].id])  # warm-up
    rss_harness = peak_rss_mb()
    one = _pipeline_transcriber(cfg, es, caps)
    one(batches[-1][0].id)  # warm-up
    rss_both = peak_rss_mb()
    hyps = {"harness": {}, "pipeline": {}}
    secs = {"harness": 0.0, "pipeline": 0.0}
    per_batch: list[float] = []

    def run_harness(b):
        t = time.perf_counter()
        out = whisper.transcribe([es.waves[it.id] for it in b], "en", cfg.eval.num_beams, caps[b[0].id])
        per_batch.append(time.perf_counter() - t)
        secs["harness"] += per_batch[-1]
        hyps["harness"].update(zip([it.id for it in b], out))

    def run_pipeline(b):
        for it in b:
            t = time.perf_counter()
            hyps["pipeline"][it.id] = one(it.id)
            secs["pipeline"] += time.perf_counter() - t

    for i, b in enumerate(batches):
        for fn in ((run_harness, run_pipeline) if i % 2 == 0 else (run_pipeline, run_harness)):
            fn(b)
    # where a harness batch's time goes: the encoder on Whisper's 30 s padded input (batch 0)
    feats = whisper.processor.feature_extractor([es.waves[it.id] for it in batches[0]], sampling_rate=SAMPLE_RATE,
                                                return_tensors="pt").input_features
    with torch.inference_mode():
        t = time.perf_counter()
        whisper.model.model.encoder(feats)
        enc = time.perf_counter() - t
    audio = sum(len(w) for w in es.waves.values()) / SAMPLE_RATE
    out = {"clips": len(es.items), "audio_seconds": round(audio, 2), "torch_threads": torch.get_num_threads(),
           "encoder_share_of_first_batch": round(enc / per_batch[0], 3),
           "peak_rss_after_harness_mb": round(rss_harness, 1), "peak_rss_after_both_mb": round(rss_both, 1)}
    for k in ("harness", "pipeline"):
        out[k] = {"rtfx": round(audio / secs[k], 3), "decode_seconds": round(secs[k], 3),
                  "wer": score_records(_records(es, hyps[k]), "english", n_boot=100)["wer"], "hyps": hyps[k]}
    return out


def run(quick: bool = False) -> dict:
    """Timing: both systems interleaved in one process. Peak RSS: each system alone in its own
    process (`side_harness` runs `evaluate_baseline` itself: its RTFx is a cross-check)."""
    from benchmarks.common import run_side

    n = 4 if quick else 24
    inter = run_side(NAME, "interleaved", {"n_clips": n})
    harness, pipe = inter.pop("harness"), inter.pop("pipeline")
    alone = run_side(NAME, "harness", {"n_clips": n})
    alone.pop("hyps")
    same = sum(harness["hyps"][k] == pipe["hyps"].get(k) for k in harness["hyps"])
    diff = [{"id": k, "harness": h, "pipeline": pipe["hyps"].get(k)} for k, h in harness["hyps"].items()
            if h != pipe["hyps"].get(k)]
    harness.pop("hyps"), pipe.pop("hyps")
    harness["peak_rss_mb"] = alone["peak_rss_mb"]
    pipe["peak_rss_increase_mb"] = round(inter["peak_rss_after_both_mb"] - inter["peak_rss_after_harness_mb"], 1)
    harness["process_wall_s"] = pipe["process_wall_s"] = inter["process_wall_s"]
    ratio = harness["rtfx"] / pipe["rtfx"]
    return {
        "ratio": ratio, "ratio_label": "harness RTFx / pipeline RTFx (interleaved in one process)",
        "target": TARGET, "met": ratio >= TARGET,
        "identical_hypotheses": same, "clips": inter["clips"], "differing": diff[:10],
        "sides": {"harness_whisper_transcriber": harness, "transformers_pipeline_loop": pipe},
        "interleaved_process": inter, "harness_evaluate_baseline_alone": alone,
        "note": "pipeline peak_rss_increase_mb: how much the one-process peak rose when the pipeline was loaded "
                "and warmed next to the warmed harness model; harness peak_rss_mb: evaluate_baseline alone in "
                "its own process (batch 8 of 30 s padded input)",
        "summary": f"RTFx {harness['rtfx']:.2f} vs {pipe['rtfx']:.2f} on {inter['clips']} test_en clips "
                   f"({inter['audio_seconds']:.0f} s audio), batches of 8 interleaved with the same clips one by one; "
                   f"WER {harness['wer']:.3f} vs {pipe['wer']:.3f}; {same}/{inter['clips']} hypotheses identical; "
                   f"evaluate_baseline alone RTFx {alone['rtfx']:.2f}; the 30 s padded encoder is "
                   f"~{inter['encoder_share_of_first_batch']:.0%} of a harness batch",
    }
