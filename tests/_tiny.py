"""Shared tiny-model ablation for the tests (random 1-layer models, a few steps)."""

from pathlib import Path

import sqlalchemy as sa
import yaml

from borealis_eval.config import deep_merge

SMALL = {"train": 16, "dev": 4, "test_ru": 4, "test_en": 4, "test_ru_espeak": 0, "test_en_espeak": 0, "webinar": 0,
         "text_train": 40, "text_heldout": 8}


def tiny_corpus(folder: Path, seed: int = 3) -> Path:
    """The scale-out tests' corpus: SMALL sizes, espeak voices only (the natural voices and their
    engines are tested in test_synth.py; here they would only slow every fixture down)."""
    from borealis_eval.data.synth import synthesize_corpus

    return synthesize_corpus(folder, seed=seed, sizes=SMALL, progress=False, natural_voices=False)


def manifest(corpus: Path, split: str) -> dict:
    return {"kind": "manifest", "path": str(corpus / f"{split}.jsonl")}


def tiny_ablation(tmp: Path, corpus: Path, name: str = "tiny_scale", grid: dict | None = None, search: dict | None = None,
                  steps: int = 4, baseline: bool = False, overrides: dict | None = None) -> Path:
    """Write the ablation to tmp/<name>.yaml; `overrides` is merged in as an `extends` child would be."""
    man = lambda split: manifest(corpus, split)  # noqa: E731
    abl = {
        "name": name,
        "description": "tiny scale-out test",
        "base": {
            "seed": 0,
            "model": {
                "encoder": {"config": {"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
                                       "encoder_ffn_dim": 32, "num_mel_bins": 80}, "short_input": True},
                "adapter": {"downsample_k": 4, "hidden_sizes": [16]},
                "llm": {"config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "num_key_value_heads": 1, "intermediate_size": 32},
                        "tokenizer": {"vocab_size": 300}, "train": "full"},
            },
            "data": {"train_sets": [{"name": "train", "source": man("train")}],
                     "text_pool": {"source": man("text_train")},
                     "language_mix": {"ru": 0.5, "en": 0.5}, "num_examples": 16},
            "train": {"steps": steps, "batch_size": 2, "lr": 1e-3, "log_every": 2, "threads": 1},
            "eval": {"sets": [{"name": "test_en", "source": man("test_en"), "max_samples": 2},
                              {"name": "dev", "source": man("dev"), "max_samples": 2}],
                     "batch_size": 4, "max_new_tokens": 4, "bootstrap": 100,
                     "baseline": {"enabled": baseline, "ref": "bundled:whisper-tiny.en", "batch_size": 4}},
        },
    }
    if grid:
        abl["grid"] = grid
    if search:
        abl["search"] = search
    if overrides:
        abl = deep_merge(abl, overrides)
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(abl, allow_unicode=True))
    return p


def claims_of(db: Path) -> dict[str, dict]:
    """The claims table of a study database: variant name -> {variant, config_hash, status, reason}."""
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        rows = c.execute(sa.text("SELECT variant, config_hash, status, reason FROM borealis_claims")).mappings().all()
    eng.dispose()
    return {r["variant"]: dict(r) for r in rows}
