"""The open-vocabulary corpus's text side (data/fortunes.py), on planted fortune files: parsing, the
sentence and crude-content filters, the hash split, the disjointness check and the OOV rate."""

from __future__ import annotations

import pytest

from borealis_eval.data import fortunes as F

EN_FILE = """The early bird catches the worm, but the second mouse gets the cheese.
\t\t-- Steven Wright
%
Short one.
%
There were 42 reasons to stay home on that rainy day.
%
<b>Markup</b> is never spoken aloud by any of our voices.
%
A damn fine cup of coffee makes the whole morning better.
%
NASA says the moon landing was filmed on the actual moon.
%
Never trust a computer you cannot throw out of a window. Or a
printer that speaks, for that matter, in any of its many voices!
%
"""
RU_FILE = """Верное средство от бессонницы - считать овец до самого утра.
%
Парадоксы нужны, чтобы привлечь внимание к идеям.
%
Этот Linux работает лучше, чем любая другая система.
%
Водка не решает проблем, но и молоко тоже не решает.
%
"""


def test_parse_drops_attribution_and_joins_lines():
    recs = F.parse_fortunes(EN_FILE)
    assert recs[0] == "The early bird catches the worm, but the second mouse gets the cheese."
    assert len(recs) == 7 and "Steven" not in " ".join(recs)
    assert recs[-1].startswith("Never trust a computer") and "Or a printer" in recs[-1]


def test_sentence_filter():
    kept = [s for r in F.parse_fortunes(EN_FILE) for s in F.clean_sentences(r, "en")]
    assert kept == ["The early bird catches the worm, but the second mouse gets the cheese.",
                    "Never trust a computer you cannot throw out of a window.",
                    "Or a printer that speaks, for that matter, in any of its many voices!"]
    stats = {"sentences_crude": 0}
    ru = [s for r in F.parse_fortunes(RU_FILE) for s in F.clean_sentences(r, "ru", stats)]
    # Latin in Russian is dropped; "Водка" is a crude stem
    assert ru == ["Верное средство от бессонницы - считать овец до самого утра.",
                  "Парадоксы нужны, чтобы привлечь внимание к идеям."] and stats["sentences_crude"] == 1
    assert F.crude("A damn fine cup.", "en") and not F.crude("A dam on the river.", "en")


def test_read_sentences_leaves_out_crude_files(tmp_path):
    folder = tmp_path / F.FORTUNE_DIRS["en"]
    folder.mkdir(parents=True)
    (folder / "people").write_text(EN_FILE, encoding="utf-8")
    (folder / "men-women").write_text("This sentence would pass every other filter here.\n%\n", encoding="utf-8")
    (folder / "people.dat").write_bytes(b"\0\1")
    sentences, stats = F.read_sentences(tmp_path, "en")
    assert len(sentences) == 3 and stats["files"] == 1 and stats["files_left_out"] == ["men-women"]


def _pool(n: int, lang: str) -> list[str]:
    return [f"sentence {lang} number {chr(97 + i % 26)}{i // 26} is here." for i in range(n)]


def test_split_is_stable_and_the_plan_keeps_test_sentences_out_of_training():
    sentences = _pool(400, "en")
    assert [F.split_of(s) for s in sentences] == [F.split_of(s) for s in sentences]
    assert {F.split_of(s) for s in sentences} == {"train", "dev", "test", "text"}
    pools = {lang: {k: [s for s in _pool(2000, lang) if F.split_of(s) == k] for k in ("train", "dev", "test", "text")}
             for lang in ("en", "ru")}
    sizes = {**F.DEFAULT_SIZES, "train": 50, "dev": 10, "test_en": 20, "test_ru": 20, "test_en_espeak": 5,
             "test_ru_espeak": 5, "text_train": 40}
    jobs = F.plan(pools, 0, sizes, natural_voices=False)
    assert jobs == F.plan(pools, 0, sizes, natural_voices=False)
    manifests = {k: [{"text": j["text"], "language": j["language"]} for j in v] for k, v in jobs.items()}
    text_rows = F.text_pool(pools, 0, 40)
    assert F.check_disjoint(manifests, text_rows) == 0
    assert all(j["voice"].startswith("espeak:") for js in jobs.values() for j in js)
    test_voices = {j["voice"].split(":")[1].split("+")[1] for j in jobs["test_en"]}
    train_voices = {j["voice"].split(":")[1].split("+")[1] for j in jobs["train"]}
    assert test_voices and not test_voices & train_voices
    manifests["train"].append(dict(manifests["test_ru"][0]))
    with pytest.raises(AssertionError, match="must be 0"):
        F.check_disjoint(manifests, text_rows)


def test_oov_rate():
    r = F.oov_rate(["the cat sat", "a new word"], ["the cat", "a sat"])
    assert r["tokens"] == pytest.approx(2 / 6, abs=1e-4) and r["types"] == pytest.approx(2 / 6, abs=1e-4)
    assert r["train_types"] == 4 and r["test_tokens"] == 6


def test_pilot_ablation_asks_the_cross_lingual_question_with_gemma():
    from pathlib import Path

    from borealis_eval.config import load_ablation

    root = Path(__file__).resolve().parents[1]
    abl, variants = load_ablation(root / "ablations" / "pilot" / "cross_lingual.yaml")
    cells = {(tuple(sorted(v.config.data.language_mix.items())), v.config.data.text_fraction) for v in variants}
    assert len(variants) == 12 and len(cells) == 6 and {v.config.seed for v in variants} == {0, 1}
    m = variants[0].config.model
    assert m.llm.ref == "bundled:gemma3-270m" and m.llm.train == "lora" and m.encoder.ref == "bundled:whisper-base"
    assert m.adapter.downsample_k == 4 and m.adapter.output == "ctc_tokens" and variants[0].config.eval.merge_lora is False
    align = variants[0].config.train.align  # CTC first, then the adapter fixed while LoRA learns to read it
    assert align is not None and align.steps > 0 and align.freeze
    # manifests, never `synth` sources (those would rebuild the templated corpus in the folder)
    assert all(s.source.kind == "manifest" and s.source.path.startswith("data/fortunes/v1/")
               for s in variants[0].config.data.train_sets)
    names = {s.name for s in variants[0].config.eval.sets}
    assert {"fortunes_test_en", "fortunes_test_ru", "test_en", "test_ru", "real_en_ivr", "real_ru_ivr", "real_ru_read"} <= names
    # the demo's own file says what its LLM is and points here
    demo, _ = load_ablation(root / "ablations" / "cpu" / "text_ratio.yaml")
    assert "trained from scratch" in demo.description and "ablations/pilot/cross_lingual.yaml" in demo.description


def test_adapter_only_probe_is_one_frozen_llm_cell_of_the_pilot():
    from pathlib import Path

    from borealis_eval.config import load_ablation

    root = Path(__file__).resolve().parents[1]
    _, pilot = load_ablation(root / "ablations" / "pilot" / "cross_lingual.yaml")
    _, variants = load_ablation(root / "ablations" / "pilot" / "adapter_only_probe.yaml")
    assert len(variants) == 1  # its own grid replaces the pilot's (no inherited axes multiply it)
    cfg = variants[0].config
    assert cfg.model.llm.train == "frozen" and cfg.train.lr == 3.0e-3 and cfg.data.language_mix == {"en": 1.0}
    # the pilot's LLM and data; the adapter and steps of the recipe it measured (rows at k 8, 600 LM steps, no alignment)
    assert cfg.model.llm.ref == pilot[0].config.model.llm.ref and cfg.data.train_sets == pilot[0].config.data.train_sets
    assert (cfg.model.adapter.output, cfg.model.adapter.downsample_k, cfg.train.steps, cfg.train.align) == ("rows", 8, 600, None)
