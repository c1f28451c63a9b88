"""The cross-lingual pilot on one lent GPU (issue 27): the pilot's model (frozen bundled Whisper base,
k=4 concat + MLP adapter with CTC soft tokens, bundled Gemma-3 270M + LoRA; `--recipe rows`: the
earlier k=8 rows recipe) trained with the harness's own SpeechLM, align() (CTC, then the adapter
fixed) and train() on the open-vocabulary corpus, one variant per cell (en100, ru100, ru50_en50 x text 0 / 0.15,
seed 0), at a larger budget than the CPU pilot; learning curves (dev WER), WER per test set and
step time go to $OUT/gpu_pilot.json. No MLflow, no sweep machinery: the GPU image lacks them.

The device machine has no network and takes at most 64 MiB per call, so the inputs are staged in
pieces by `scripts/gpu_pilot.sh stage` (here) and sent in several warm calls (see that script);
on the device `scripts/gpu_pilot.sh run` reassembles them and calls this file.

    python benchmarks/gpu_pilot.py --data .gpu_pilot/data.npz           # on the GPU machine
    python benchmarks/gpu_pilot.py --data DATA --smoke                    # CPU: 2 steps, 2 cells, the code path only

STATUS: prepared, run only in --smoke mode on CPU (no device was lent to the session that wrote it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CELLS = [({"en": 1.0}, 0.0), ({"en": 1.0}, 0.15), ({"ru": 1.0}, 0.0), ({"ru": 1.0}, 0.15),
         ({"ru": 0.5, "en": 0.5}, 0.0), ({"ru": 0.5, "en": 0.5}, 0.15)]


def export(corpus: Path, real: Path, out: Path, per_lang: int, per_set: int) -> None:
    """Here: the corpus's clips as int16 arrays + texts in one .npz (no soundfile needed there)."""
    import soundfile as sf

    arrays, meta = {}, {}
    sets = {"train": (corpus / "train.jsonl", per_lang), "dev": (corpus / "dev.jsonl", min(per_set, 16)),
            "fortunes_test_en": (corpus / "test_en.jsonl", per_set), "fortunes_test_ru": (corpus / "test_ru.jsonl", per_set),
            "real_en_ivr": (real / "real_en_ivr.jsonl", per_set), "real_ru_ivr": (real / "real_ru_ivr.jsonl", per_set),
            "real_ru_read": (real / "real_ru_read.jsonl", per_set)}
    for name, (path, n) in sets.items():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        take: dict[str, int] = {}
        kept = []
        for r in rows:
            if take.get(r["language"], 0) < n and r.get("duration", 0) <= 30:
                take[r["language"]] = take.get(r["language"], 0) + 1
                kept.append(r)
        meta[name] = []
        for i, r in enumerate(kept):
            audio, sr = sf.read(str(path.parent / r["audio"]), dtype="float32")
            if sr != 16000:  # the Asterisk prompts are 8 kHz
                import soxr

                audio = soxr.resample(audio, sr, 16000)
            arrays[f"{name}/{i}"] = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
            meta[name].append({"text": r["text"], "language": r["language"]})
    text = [json.loads(line) for line in (corpus / "text_train.jsonl").read_text(encoding="utf-8").splitlines()]
    arrays["meta"] = np.frombuffer(json.dumps({"sets": meta, "text": text}, ensure_ascii=False).encode(), dtype=np.uint8)
    np.savez(out, **arrays)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--export", nargs=2, type=Path, metavar=("CORPUS", "REAL"), help="write --data from the corpus (here)")
    ap.add_argument("--per-lang", type=int, default=1000, help="--export: training clips per language")
    ap.add_argument("--per-set", type=int, default=60, help="--export: clips per test set (dev: 16 per language)")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--recipe", choices=["ctc", "rows"], default="ctc",
                    help="ctc: the pilot profile's (CTC soft tokens, --align-steps of CTC, then the adapter fixed); rows: the earlier one")
    ap.add_argument("--align-steps", type=int, default=600)
    ap.add_argument("--cell", type=int, action="append", help="only these cells (indices into CELLS); repeatable")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results")) / "gpu_pilot.json")
    a = ap.parse_args()
    if a.export:
        export(*a.export, a.data, a.per_lang, a.per_set)
        return 0
    import jiwer

    from borealis_eval.align import align
    from borealis_eval.config import AdapterConfig, AlignConfig, EncoderConfig, LLMConfig, ModelConfig, TrainConfig
    from borealis_eval.data.mixer import mix
    from borealis_eval.data.sources import AudioItem, TextItem
    from borealis_eval.evaluate.normalize import normalizer_for_language
    from borealis_eval.models.encoder import FrozenWhisperEncoder
    from borealis_eval.models.speech_lm import Example, SpeechLM
    from borealis_eval.train import train

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps, batch, cells = (2, 2, CELLS[:2]) if a.smoke else (a.steps, a.batch, CELLS)
    cells = [CELLS[i] for i in a.cell] if a.cell else cells
    z = np.load(a.data)
    meta = json.loads(bytes(z["meta"]).decode())
    enc = FrozenWhisperEncoder(EncoderConfig(ref="bundled:whisper-base", short_input=True), device=dev)
    t0 = time.perf_counter()
    feats = {name: enc.encode_many([z[f"{name}/{i}"].astype(np.float32) / 32768 for i in range(len(rows))], batch_size=32)
             for name, rows in meta["sets"].items()}
    encode_s = time.perf_counter() - t0
    train_items = [AudioItem(id=f"train/{i}", text=r["text"], language=r["language"])
                   for i, r in enumerate(meta["sets"]["train"])]
    text_items = [TextItem(id=t["id"], language=t["language"], instruction=t["instruction"], answer=t["answer"])
                  for t in meta["text"]]

    def wer(model, name: str, limit: int | None = None) -> tuple[float, list[str]]:
        rows = meta["sets"][name][:limit]
        hyps = []
        for s in range(0, len(rows), 16):
            exs = [Example(answer="", features=feats[name][i].float().to(dev), id=str(i)) for i in range(s, min(s + 16, len(rows)))]
            hyps += model.generate(exs, max_new_tokens=64)
        norm = [normalizer_for_language(r["language"]) for r in rows]
        refs = [n(r["text"]) for n, r in zip(norm, rows)]
        return 100 * jiwer.wer(refs, [n(h) or "<empty>" for n, h in zip(norm, hyps)]), hyps

    results = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "steps": steps, "batch": batch,
               "encode_seconds": round(encode_s, 1), "cells": []}
    for mixture, text_fraction in cells:
        torch.manual_seed(0)
        ctc = a.recipe == "ctc"
        adapter = (AdapterConfig(downsample_k=4, hidden_sizes=[512], output="ctc_tokens") if ctc
                   else AdapterConfig(downsample_k=8, hidden_sizes=[512]))
        cfg = ModelConfig(encoder=EncoderConfig(ref="bundled:whisper-base"), adapter=adapter,
                          llm=LLMConfig(ref="bundled:gemma3-270m", train="lora",
                                        lora={"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}))
        model = SpeechLM.from_config(cfg, enc_dim=enc.dim, device=dev).to(dev)
        stream = mix(train_items, text_items, mixture, text_fraction, steps * batch, 0, "replace").examples
        exs = [Example(answer=e.text, features=feats["train"][int(e.id.split("/")[1])].float(), id=e.id)
               if isinstance(e, AudioItem) else Example(answer=e.answer, instruction=e.instruction, id=e.id) for e in stream]
        curve = []
        align_s = 0.0
        if ctc:  # as the recipe does: the study's transcripts (all languages) as the CTC classes, align, fix the adapter
            model.set_ctc_vocabulary([it.text for it in train_items])
            aligned = align(model, exs, AlignConfig(steps=2 if a.smoke else a.align_steps, batch_size=batch), 0,
                            progress=False)
            align_s = aligned.seconds
            model.freeze_aligned_adapter()

        def on_step(step: int, model=model, curve=curve):
            if step % a.every == 0 or step == steps:
                w, _ = wer(model, "dev", 32)
                curve.append((step, round(w, 1)))
                print(f"{mixture} text {text_fraction}: step {step} dev WER {w:.1f}", flush=True)
            return None

        r = train(model, exs, TrainConfig(steps=steps, batch_size=batch, lr=a.lr, warmup_ratio=0.05), 0, progress=False,
                  on_step=on_step)
        cell = {"mix": mixture, "text_fraction": text_fraction, "recipe": a.recipe, "align_seconds": round(align_s, 1),
                "s_per_step": round(r.seconds / steps, 4),
                "first_loss": r.first_loss, "last_loss": r.last_loss, "dev_curve": curve, "wer": {}, "examples": {}}
        for name in meta["sets"]:
            if name not in ("train", "dev"):
                w, hyps = wer(model, name, 4 if a.smoke else None)
                cell["wer"][name] = round(w, 1)
                cell["examples"][name] = [{"ref": r["text"], "hyp": h} for r, h in list(zip(meta["sets"][name], hyps))[:10]]
        if dev.type == "cuda":
            cell["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        results["cells"].append(cell)
        print(json.dumps({k: v for k, v in cell.items() if k != "examples"}, ensure_ascii=False), flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
