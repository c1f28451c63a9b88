"""Decode a study's eval sets with a trained speech-LLM or the plain-Whisper baseline, then score.

Both paths share one protocol: clips sorted by length and batched (`evaluate.runner.decode_set`),
the runaway cap of `eval.max_tokens_per_second` new tokens per audio second (+16), raw
hypotheses cached by model identity (`DecodeCache`: a resumed or re-scored run never decodes
twice), and `evaluate.runner.score_set` for the numbers. Long recordings are decoded in
`eval.window_seconds` windows by the speech-LLM (encoder outputs cached like any clip) and by
Whisper's own sequential long-form generation for the baseline.
"""

from __future__ import annotations

import copy
import hashlib

import torch

from borealis_eval.audio import ENCODER_FRAMES_PER_SECOND, SAMPLE_RATE
from borealis_eval.config import BaselineConfig, ExperimentConfig
from borealis_eval.evaluate.runner import SetResult, decode_set, score_set
from borealis_eval.evaluate.textskill import text_ability
from borealis_eval.models.speech_lm import Example, SpeechLM
from borealis_eval.resources import EvalData, Resources


def decode_params(cfg: ExperimentConfig) -> dict:
    """The decoding settings that change hypotheses (part of the decode-cache key and the baseline's claim)."""
    e = cfg.eval
    return {"max_new_tokens": e.max_new_tokens, "tps": e.max_tokens_per_second, "beams": e.num_beams,
            "window": e.window_seconds, "long_form": e.long_form, "merge_lora": e.merge_lora}


def token_cap(cfg: ExperimentConfig, seconds: float, windows: int = 1) -> int:
    """New-token budget for audio of `seconds`: the runaway cap, never above max_new_tokens per
    window (a concatenated long-form prompt of n windows gets n times the budget)."""
    return min(cfg.eval.max_new_tokens * windows, int(cfg.eval.max_tokens_per_second * seconds) + 16)


def weights_id(model: torch.nn.Module) -> str:
    """Identity of trained weights (for the decode cache): hash of the trainable tensors."""
    h = hashlib.sha1()
    for k, t in sorted(model.trainable_state_dict().items()):
        h.update(k.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def decoder(model: SpeechLM, cfg: ExperimentConfig) -> SpeechLM:
    """What evaluation decodes with: anything with `generate(examples, max_new_tokens, num_beams) -> texts`
    (the one interface a faster backend, e.g. vLLM fed with prompt embeddings, would implement).

    With LoRA adapters and `eval.merge_lora`, a copy of the model with the adapters merged into the
    base weights (peft's merge_and_unload): the same function without the adapters' extra matmuls
    in every layer; the trained model itself is left as it is.
    """
    if not cfg.eval.merge_lora or not hasattr(model.llm, "merge_and_unload"):
        return model
    merged = copy.deepcopy(model)
    merged.llm = merged.llm.merge_and_unload()
    return merged.eval()


def _decode_cached(res: Resources, es: EvalData, model_id: str | None, params: dict, decode) -> tuple[list[dict], float]:
    if model_id is None:
        return decode()
    key = res.decodes.key(model_id, es.name, es.items, es.audio_keys, params)
    hit = res.decodes.get(key)
    if hit is not None:
        return hit
    records, secs = decode()
    res.decodes.put(key, records, secs)
    return records, secs


def evaluate_speech_lm(model: SpeechLM, res: Resources, cfg: ExperimentConfig, model_id: str | None = None,
                       sets: list[str] | None = None, eval_sets: list[EvalData] | None = None,
                       progress: bool = True, warmup: bool = True) -> list[SetResult]:
    """Decode and score every eval set (or those named in `sets`; or `eval_sets` instead of the
    study's) with a trained speech-LLM; `warmup=False` skips the untimed warm-up (no RTFx needed)."""
    results = []
    model = decoder(model, cfg)
    for es in res.eval_sets if eval_sets is None else eval_sets:
        if sets is not None and es.name not in sets:
            continue
        keys_of = {i: res.window_keys(i) for i in es.waves}

        def transcribe(ids: list[str], language: str, keys_of=keys_of) -> list[str]:
            if cfg.eval.long_form == "concat":  # every window's encoder output in one prompt, one decode
                exs = [Example(answer="", id=i, features=torch.cat(
                    [res.features[k] for k in keys_of[i]]).float().to(res.device)) for i in ids]
                longest = max(x.features.shape[0] for x in exs) / ENCODER_FRAMES_PER_SECOND
                cap = token_cap(cfg, longest, windows=max(len(keys_of[i]) for i in ids))
                return model.generate(exs, cap, cfg.eval.num_beams)
            keys = [(i, k) for i in ids for k in keys_of[i]]
            exs = [Example(answer="", features=res.features[k].float().to(res.device), id=k) for _, k in keys]
            longest = max(x.features.shape[0] for x in exs) / ENCODER_FRAMES_PER_SECOND
            hyps = model.generate(exs, token_cap(cfg, longest), cfg.eval.num_beams)
            joined: dict[str, list[str]] = {i: [] for i in ids}
            for (i, _), h in zip(keys, hyps):
                joined[i].append(h)
            return [" ".join(x for x in joined[i] if x) for i in ids]

        records, secs = _decode_cached(res, es, model_id, decode_params(cfg), lambda es=es, fn=transcribe: decode_set(
            es.items, es.durations, fn, es.language, cfg.eval.batch_size, f"decoding {es.name}", progress, warmup))
        results.append(score_set(es.name, records, es.language, secs, cfg.eval.bootstrap))
    return results


def evaluate_text_skill(model: SpeechLM, res: Resources, cfg: ExperimentConfig) -> dict[str, tuple[dict, list[dict]]]:
    """Answer held-out text-only instructions: per text set, (chrF/exact-match scores, prediction rows)."""
    out = {}
    model = decoder(model, cfg) if res.text_sets else model
    for name, items in res.text_sets:
        preds: list[str] = []
        for s in range(0, len(items), cfg.eval.batch_size):
            chunk = items[s : s + cfg.eval.batch_size]
            preds += model.generate([Example(answer="", instruction=it.instruction, id=it.id) for it in chunk],
                                    cfg.eval.max_new_tokens, cfg.eval.num_beams)
        records = [{"id": it.id, "instruction": it.instruction, "answer": it.answer, "prediction": p}
                   for it, p in zip(items, preds)]
        out[name] = (text_ability(records), records)
    return out


def baseline_params(b: BaselineConfig, cfg: ExperimentConfig) -> dict:
    """The settings that change a baseline's hypotheses (its decode-cache key and claim)."""
    return {"backend": b.backend, "compute_type": b.compute_type, "beams": b.num_beams, "timestamps": b.timestamps,
            "max_new_tokens": cfg.eval.max_new_tokens, "tps": cfg.eval.max_tokens_per_second}


def evaluate_baseline(res: Resources, cfg: ExperimentConfig, baseline: BaselineConfig | None = None,
                      ref: str | None = None) -> list[SetResult]:
    """Decode and score every eval set with plain Whisper (`baseline`, default the main one; `ref`
    overrides its model) under its own protocol, told each clip's own language."""
    from borealis_eval.models.baseline import make_transcriber

    b = baseline or cfg.eval.baseline
    ref = ref or b.ref
    whisper = None
    results = []
    for es in res.eval_sets:
        item_lang = {it.id: it.language for it in es.items}

        def fn(ids: list[str], lang: str, es=es, item_lang=item_lang) -> list[str]:
            nonlocal whisper
            whisper = whisper or make_transcriber(ref, b.backend, b.compute_type, res.device, b.num_beams,
                                                  b.timestamps)  # loaded only on a cache miss
            out: dict[str, str] = {}
            for language in sorted({item_lang[i] for i in ids}):  # Whisper is told each clip's own language
                group = [i for i in ids if item_lang[i] == language]
                waves = [es.waves[i] for i in group]
                longest = min(30.0, max(len(w) for w in waves) / SAMPLE_RATE)  # long-form: per 30 s segment
                out.update(zip(group, whisper.transcribe(waves, language, None, token_cap(cfg, longest))))
            return [out[i] for i in ids]

        records, secs = _decode_cached(res, es, f"whisper:{ref}", baseline_params(b, cfg), lambda es=es, fn=fn: decode_set(
            es.items, es.durations, fn, es.language, b.batch_size, f"{b.name} {es.name}"))
        results.append(score_set(es.name, records, es.language, secs, cfg.eval.bootstrap))
    return results
