"""Measurements on this machine (a CPU profile with local data): training steps of each variant
on its real data mix, decoding, encoding and the baseline, with the recipe's own builders."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from borealis_eval.audio import SAMPLE_RATE
from borealis_eval.config import ExperimentConfig, ModelConfig, Variant
from borealis_eval.plan.devices import Device
from borealis_eval.plan.model_cost import Tokens, encoder_shape


@dataclass
class LocalData:
    """The variants' training items and text pool, and the eval sets, read from local manifests."""

    train: list
    text: list
    eval_sets: list[tuple[Any, list]]  # (EvalSet, items)
    text_sets: list[tuple[Any, list]]

    @staticmethod
    def available(cfg: ExperimentConfig) -> bool:
        sources = [s.source for s in cfg.data.train_sets] + [s.source for s in cfg.eval.sets]
        sources += [cfg.data.text_pool.source] if cfg.data.text_pool else []
        return all(src.kind in ("synth", "manifest") for src in sources)

    @classmethod
    def load(cls, cfg: ExperimentConfig) -> "LocalData":
        from borealis_eval.config import TextPool
        from borealis_eval.data.sources import load_audio_set, load_text_pool

        train = [it for s in cfg.data.train_sets for it in load_audio_set(s)]
        text = load_text_pool(cfg.data.text_pool) if cfg.data.text_pool else []
        evals = [(s, load_audio_set(s)) for s in cfg.eval.sets]
        texts = [(t, load_text_pool(TextPool(source=t.source, max_samples=t.max_samples))) for t in cfg.eval.text_sets]
        return cls(train, text, evals, texts)


def _audio_frames(seconds: float) -> int:
    from borealis_eval.models.encoder import encoder_frames

    return encoder_frames(int(seconds * SAMPLE_RATE))


class Prober:
    """Measures on this machine what the plan needs: seconds per training step of each variant, per
    decoding step, per encoded and per baseline-decoded second of audio."""

    def __init__(self, base: ExperimentConfig, data: LocalData, device: Device, notes: list[str], timing: bool = True,
                 encode_threads: int | None = None):
        self.base, self.data, self.device, self.notes = base, data, device, notes
        self._tok: dict[str, Any] = {}
        self._decode_fit: dict[str, tuple[float, float]] = {}
        self.encode_threads = encode_threads  # local workers: the sweep encodes with all their threads
        enc_kw, _ = encoder_shape(base.model.encoder)
        self.enc_dim = enc_kw["d_model"]
        if not timing:
            return
        if base.train.threads:
            torch.set_num_threads(base.train.threads)
        notes.append("time probed on this machine (training steps of each variant on its real data mix with "
                     "random features of the real lengths; timed decoding, encoding and baseline batches); "
                     "assumes cold feature and decode caches except where the plan found cache entries")

    # ---- tokenizer and training stream: the functions the study's resources use (resources.py, data/mixer.py)
    def tokenizer(self, model: ModelConfig):
        from borealis_eval.resources import tokenizer_for

        return tokenizer_for(model, self.data.train, self.data.text, self._tok)

    def stream(self, v: Variant) -> list:
        from borealis_eval.data.mixer import mix_for

        return mix_for(v, self.data.train, self.data.text).examples

    def tokenizer_len(self, model: ModelConfig) -> int:
        return len(self.tokenizer(model))

    def _model(self, v: Variant):
        """The variant's model as the recipe builds it (one per variant, reused by every probe)."""
        from borealis_eval.models.speech_lm import SpeechLM

        if getattr(self, "_cached", (None,))[0] != v.name:
            torch.manual_seed(v.config.seed)
            model = SpeechLM.from_config(v.config.model, self.enc_dim, self.tokenizer(v.config.model), device="cpu")
            if model.adapter.ctc is not None:  # as the recipe does: the CTC head classifies the study's transcripts
                model.set_ctc_vocabulary([it.text for it in self.data.train])
            self._cached = (v.name, model)
        return self._cached[1]

    def _examples(self, v: Variant, n: int) -> list:
        """The first `n` examples of the variant's training stream, features random at their real length."""
        from borealis_eval.data.sources import AudioItem
        from borealis_eval.models.speech_lm import Example

        g = torch.Generator().manual_seed(0)
        out = []
        for e in self.stream(v)[:n]:
            if isinstance(e, AudioItem):
                frames = _audio_frames(e.duration or 3.0)
                out.append(Example(answer=e.text, features=torch.randn(frames, self.enc_dim, generator=g).half(), id=e.id))
            else:
                out.append(Example(answer=e.answer, instruction=e.instruction, id=e.id))
        return out

    def tokens(self, v: Variant) -> Tokens:
        from borealis_eval.data.sources import AudioItem
        from borealis_eval.models.adapter import stacked_length

        cfg = v.config
        model = self._model(v)
        before, after = model._prompt_ids(f"<AUDIO>\n{cfg.model.prompt}")
        stream = self.stream(v)
        sample = stream[: 64 * cfg.train.batch_size]
        tok = model.tok
        lengths, audio, answers, n_text = [], [], [], 0
        for e in sample:
            ans = len(tok(e.answer if not isinstance(e, AudioItem) else e.text, add_special_tokens=False)["input_ids"]) + 1
            if isinstance(e, AudioItem):
                a = stacked_length(_audio_frames(e.duration or 3.0), cfg.model.adapter.downsample_k)
                audio.append(a)
                answers.append(ans)
                lengths.append(len(before) + len(after) + 2 + a + ans)
            else:
                n_text += 1
                lengths.append(len(model._prompt_ids(e.instruction)[0]) + ans)
        b = cfg.train.batch_size
        padded = float(np.mean([max(lengths[s : s + b]) for s in range(0, len(lengths) - b + 1, b)]))
        return Tokens(len(before) + len(after) + 2, float(np.mean(audio or [0])), float(np.mean(answers or [0])),
                      padded, b * cfg.train.grad_accum * padded, n_text / max(1, len(sample)))

    # ---- training
    def align_step(self, v: Variant, steps: int) -> float:
        """Seconds per step of the alignment phase (`train.align`): `align()` on the variant's first audio
        examples (2 warm-up steps first). Run before `train_step` of the same variant, whose frozen
        adapter (`align.freeze`) has nothing left for `align()` to train."""
        from borealis_eval.align import align

        cfg = v.config
        ac = cfg.train.align
        examples = self._examples(v, (steps + 2) * ac.batch_size * 2)
        model = self._model(v)
        align(model, examples, ac.model_copy(update={"steps": 2}), cfg.seed, cfg.train.precision, progress=False)
        return align(model, examples, ac.model_copy(update={"steps": steps}), cfg.seed, cfg.train.precision,
                     progress=False).seconds / steps

    def train_step(self, v: Variant, steps: int) -> float:
        """Seconds per optimizer step: `train()` on the variant's first batches (2 warm-up steps first),
        with the aligned adapter fixed where `train.align.freeze` fixes it."""
        from borealis_eval.train import train

        cfg = v.config
        model = self._model(v)
        if cfg.train.align is not None and cfg.train.align.freeze:
            model.freeze_aligned_adapter()
        need = (steps + 2) * cfg.train.batch_size * cfg.train.grad_accum
        examples = self._examples(v, need)
        train(model, examples, cfg.train.model_copy(update={"steps": 2}), cfg.seed, progress=False)
        r = train(model, examples, cfg.train.model_copy(update={"steps": steps}), cfg.seed, progress=False)
        return r.seconds / steps

    # ---- decoding with the variant's model (untrained here: forced to emit a set number of tokens)
    def _decode_cost(self, v: Variant) -> tuple[float, float]:
        """(seconds per batch, seconds per generated-token step) for a full eval batch, fitted on two lengths."""
        from borealis_eval.models.speech_lm import Example

        cfg = v.config
        shape = json.dumps([cfg.model.model_dump(mode="json"), cfg.eval.batch_size])
        if shape in self._decode_fit:
            return self._decode_fit[shape]
        model = self._model(v).eval()
        secs = [it.duration or 3.0 for _, items in self.data.eval_sets for it in items]
        frames = _audio_frames(min(float(np.median(secs)), cfg.eval.window_seconds))
        g = torch.Generator().manual_seed(1)
        batch = [Example(answer="", features=torch.randn(frames, self.enc_dim, generator=g)) for _ in range(cfg.eval.batch_size)]
        times = []
        for n in (4, 4, 24):  # the first call warms up
            model.llm.generation_config.min_new_tokens = n
            t = time.perf_counter()
            model.generate(batch, max_new_tokens=n)
            times.append(time.perf_counter() - t)
        model.llm.generation_config.min_new_tokens = None
        per_token = max(0.0, (times[2] - times[1]) / 20)
        fit = (max(0.0, times[1] - 4 * per_token), per_token)
        self._decode_fit[shape] = fit
        return fit

    def eval_seconds(self, v: Variant) -> float:
        """Every eval set decoded as `decode_set` does (duration-sorted batches, one untimed warm-up batch
        of two clips, windows per the long-form mode) plus the text sets; a trained model is assumed to
        stop after the reference transcript (+ end token), within the runaway cap."""
        from borealis_eval.decode import token_cap

        cfg = v.config
        per_batch, per_token = self._decode_cost(v)
        tok = self.tokenizer(cfg.model)
        total = 0.0
        for _, items in self.data.eval_sets:
            order = sorted(items, key=lambda it: -(it.duration or 0))
            batches = [order[s : s + cfg.eval.batch_size] for s in range(0, len(order), cfg.eval.batch_size)]
            for b in batches + ([batches[-1][:2]] if batches else []):
                n_win = [max(1, math.ceil((it.duration or 0) / cfg.eval.window_seconds)) for it in b]
                refs = [len(tok(it.text, add_special_tokens=False)["input_ids"]) + 1 for it in b]
                if cfg.eval.long_form == "concat":
                    cap = token_cap(cfg, max(it.duration or 0 for it in b), windows=max(n_win))
                    calls = [(len(b), min(cap, max(refs)))]
                else:  # per window: one call over all windows, each window holding its share of the text
                    longest = min(cfg.eval.window_seconds, max(it.duration or 0 for it in b))
                    share = max(r / w for r, w in zip(refs, n_win))
                    calls = [(sum(n_win), min(token_cap(cfg, longest), math.ceil(share)))]
                for n_ex, steps in calls:
                    scale = n_ex / cfg.eval.batch_size
                    total += scale * (per_batch + steps * per_token)
        for t, items in self.data.text_sets:
            for s in range(0, len(items), cfg.eval.batch_size):
                chunk = items[s : s + cfg.eval.batch_size]
                steps = min(cfg.eval.max_new_tokens,
                            max(len(tok(it.answer, add_special_tokens=False)["input_ids"]) + 1 for it in chunk))
                total += len(chunk) / cfg.eval.batch_size * (per_batch + steps * per_token)
        return total

    # ---- once per sweep: encoding the feature cache, the Whisper baseline
    def shared_seconds(self, variants: list[Variant]) -> dict[str, float]:
        from borealis_eval.data.features import FeatureCache, audio_hash
        from borealis_eval.data.sources import AudioItem, load_waves
        from borealis_eval.audio import windows
        from borealis_eval.evaluate.decode_cache import DecodeCache
        from borealis_eval.models.encoder import FrozenWhisperEncoder
        from borealis_eval.decode import decode_params as _decode_params

        base = self.base
        needed = {}
        for v in variants:
            for e in self.stream(v):
                if isinstance(e, AudioItem):
                    needed[e.id] = e
        encoder = FrozenWhisperEncoder(base.model.encoder)
        cache = FeatureCache(encoder.identity.key)
        waves = load_waves(list(needed.values()), [], "train")
        for spec, items in self.data.eval_sets:
            for it in items:
                for j, w in enumerate(windows(it.load(), base.eval.window_seconds)):
                    waves[f"{spec.name}/{it.id}#{j}"] = w
        missing = [w for w in waves.values() if not cache.path(audio_hash(w)).is_file()]
        padded = sum(encoder.padded_length(len(w)) for w in missing) / SAMPLE_RATE
        out = {"encoding": 0.0, "baseline": 0.0}
        if missing:
            sample = sorted(missing, key=len)[len(missing) // 2 :][: base.eval.batch_size]
            threads = torch.get_num_threads()
            torch.set_num_threads(self.encode_threads or threads)  # as the sweep encodes (resources.py)
            encoder.encode_many(sample[:2])  # warm-up
            t = time.perf_counter()
            encoder.encode_many(sample, base.eval.batch_size)
            rate = (time.perf_counter() - t) / (sum(encoder.padded_length(len(w)) for w in sample) / SAMPLE_RATE)
            torch.set_num_threads(threads)
            out["encoding"] = rate * padded
        self.notes.append(f"feature cache: {len(missing)} of {len(waves)} clips/windows to encode")
        if base.eval.baseline.enabled:
            out["baseline"] = self._baseline_seconds(DecodeCache(), _decode_params(base))
        del encoder
        return out

    def _baseline_seconds(self, decodes, params: dict) -> float:
        """Whisper decoding of every eval set not already in the decode cache: a timed batch of real
        clips gives seconds per clip (the padded 30 s encoder dominates), times the clips."""
        from borealis_eval.data.features import audio_hash
        from borealis_eval.models.baseline import WhisperTranscriber
        from borealis_eval.decode import token_cap

        base = self.base
        ref = base.eval.baseline.ref
        todo = []
        for spec, items in self.data.eval_sets:
            waves = {it.id: it.load() for it in items}
            key = decodes.key(f"whisper:{ref}", spec.name, items, [audio_hash(waves[it.id]) for it in items], params)
            if decodes.get(key) is None:
                todo.append((spec, items, waves))
        self.notes.append(f"baseline decode cache: {len(self.data.eval_sets) - len(todo)} of "
                          f"{len(self.data.eval_sets)} eval sets already decoded")
        if not todo:
            return 0.0
        whisper = WhisperTranscriber(ref)
        bs = base.eval.baseline.batch_size
        spec, items, waves = todo[0]
        sample = [waves[it.id] for it in sorted(items, key=lambda it: it.duration or 0)][len(items) // 2 :][:bs]
        language = spec.language or items[0].language
        whisper.transcribe(sample[:1], language, base.eval.num_beams, 32)  # warm-up
        t = time.perf_counter()
        whisper.transcribe(sample, language, base.eval.num_beams, token_cap(base, 30.0))
        per_clip = (time.perf_counter() - t) / len(sample)
        clips = sum(max(1, math.ceil(len(w) / SAMPLE_RATE / 30)) for _, _, ws in todo for w in ws.values())
        warmups = 2 * len(todo)  # decode_set's untimed first batch
        return per_clip * (clips + warmups)


def probe_align_seconds(prober: Prober, variants: list[Variant], steps: int) -> dict[str, tuple[float, str]]:
    """Seconds per alignment step, probed once per model and alignment shape (the grid's data axes
    change only which clips a batch draws); {} when no variant has `train.align`."""
    out, done = {}, {}
    for v in variants:
        if v.config.train.align is None:
            continue
        key = json.dumps([v.config.model.model_dump(mode="json"), v.config.train.align.model_dump(mode="json",
                                                                                           exclude={"steps"})])
        if key not in done:
            done[key] = (prober.align_step(v, steps), f"probe ({steps} steps)")
        out[v.name] = done[key]
    return out


def probe_step_seconds(prober: Prober, variants: list[tuple[Variant, Tokens]],
                       steps: int) -> dict[str, tuple[float, str]]:
    """Seconds per step of every variant from at most two probes per model/training shape: the
    variants with the fewest and the most padded tokens per step are timed, the others placed on
    the line through them (a step's cost grows with its padded tokens; the grid's data axes only
    change those)."""
    groups: dict[str, list[tuple[Variant, Tokens]]] = {}
    for v, t in variants:
        key = json.dumps([v.config.model.model_dump(mode="json"),
                          v.config.train.model_dump(mode="json", exclude={"steps", "log_every", "lr", "warmup_ratio"})])
        groups.setdefault(key, []).append((v, t))
    out = {}
    for members in groups.values():
        members.sort(key=lambda m: m[1].per_step)
        ends = [members[0]] if members[0][1].per_step == members[-1][1].per_step else [members[0], members[-1]]
        timed = [(t.per_step, prober.train_step(v, steps)) for v, t in ends]
        for v, t in members:
            if len(timed) == 1 or v.name in {e[0].name for e in ends}:
                sec = timed[0][1] if len(timed) == 1 or v.name == ends[0][0].name else timed[1][1]
                out[v.name] = (sec, f"probe ({steps} steps)")
            else:
                (x0, y0), (x1, y1) = timed
                sec = y0 + (y1 - y0) * (t.per_step - x0) / (x1 - x0)
                out[v.name] = (max(sec, min(y0, y1)), "interpolated by tokens/step between 2 probed variants")
    return out
