"""Does a trained speech-LLM variant listen? Two measurements on one logged model folder:

1. the norm of the adapter's audio rows against the LLM's (scaled) text embedding rows, and how
   much of a clip's audio rows is one shared vector (norm of their mean / median row norm: near 1
   means the rows carry little that differs from frame to frame);
2. the answer loss (nats per token) with each clip's own audio against the same answers with
   another clip's audio (a fixed shuffle): a model that ignores the audio scores both alike.

    .venv/bin/python -m benchmarks.pilot_listen mlartifacts/<experiment>/models/<model id>/artifacts \\
        data/fortunes/v1/test_en.jsonl data/fortunes/v1/test_ru.jsonl --clips 32

Manifests are read as the harness reads them (`read_manifest`: `audio` relative to the manifest's
folder, `text`). Prints one JSON line per manifest.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    from borealis_eval.data.manifest import load_audio, read_manifest
    from borealis_eval.logged_model import load_folder
    from borealis_eval.models.speech_lm import Example

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_folder", type=Path, help="a logged model's artifacts folder (weights/, tokenizer/, config/)")
    ap.add_argument("manifests", type=Path, nargs="+")
    ap.add_argument("--clips", type=int, default=32, help="first N clips of each manifest")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)

    _, encoder, model = load_folder(args.model_folder)
    emb = model.llm.get_input_embeddings()
    for manifest in args.manifests:
        rows = read_manifest(manifest)[:args.clips]
        with torch.no_grad():
            feats = [encoder.encode_many([load_audio(r["audio_path"])])[0] for r in rows]
            text_ids = model.tok(" ".join(r["text"] for r in rows), add_special_tokens=False)["input_ids"]
            text_norm = float(emb(torch.tensor(text_ids)).norm(dim=-1).median())
            row_norms, shared = [], []
            for f in feats:
                audio = model.audio_inputs(model.adapter_rows([f]))[0].float()  # what the LLM reads, no markers
                n = audio.norm(dim=-1)
                row_norms.append(float(n.median()))
                shared.append(float(audio.mean(0).norm() / n.median()))
            perm = list(range(len(rows)))
            random.Random(0).shuffle(perm)

            def loss(pairs: list[tuple[int, int]]) -> float:
                parts = []
                for i in range(0, len(pairs), args.batch):
                    ex = [Example(answer=rows[a]["text"], features=feats[f]) for a, f in pairs[i:i + args.batch]]
                    parts.append(float(model.loss(*model.batch(ex))))
                return sum(parts) / len(parts)

            own = loss([(i, i) for i in range(len(rows))])
            other = loss([(i, perm[i]) for i in range(len(rows))])
        row_norms.sort()
        shared.sort()
        print(json.dumps({
            "manifest": str(manifest), "clips": len(rows),
            "text_embedding_norm_median": round(text_norm, 2),
            "audio_row_norm_median": round(row_norms[len(row_norms) // 2], 2),
            "audio_shared_fraction": [round(shared[0], 3), round(shared[len(shared) // 2], 3), round(shared[-1], 3)],
            "loss_own_audio": round(own, 3), "loss_other_audio": round(other, 3),
            "listening_gain_nats_per_token": round(other - own, 3),
        }, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
