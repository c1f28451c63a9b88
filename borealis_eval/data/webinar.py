"""Synthetic "webinar" recordings: long (>30 s), several speakers, room, noise, hum, phone band.

They exercise long-form decoding and robustness the way real webinars do (the Borealis
ablation saw ~60% WER there): speakers (natural and espeak voices, see ``synth.webinar_speakers``)
take turns reading test-like sentences (held-out words and shapes), separated by pauses and
sometimes overlapping, then the mix is reverberated, optionally band-limited to 300-3400 Hz,
and buried in noise at 10-20 dB SNR plus 50 Hz hum.
"""

from __future__ import annotations

import random

import numpy as np

from .augment import noise_at_snr, reverberate, speech_power, telephone_band
from .espeak import TARGET_SR
from .sentences import SentenceBank
from .voices import Speakers, Voice

SR = TARGET_SR


def add_noise_and_hum(x: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Brown-ish room noise at ``snr_db`` relative to the speech power, plus mains hum."""
    noise = noise_at_snr(x, rng, snr_db)
    t = np.arange(len(x)) / SR
    hum_amp = np.sqrt(speech_power(x)) * 10 ** (-rng.uniform(22, 30) / 20)
    hum = hum_amp * (np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 100 * t + 1.0)
                     + 0.25 * np.sin(2 * np.pi * 150 * t + 2.0))
    return (x + noise + hum).astype(np.float32)


def plan_webinar(bank: SentenceBank, split: str, language: str, rng: random.Random,
                 speakers: list[str], telephone: bool,
                 min_seconds: float = 45.0, max_seconds: float = 65.0) -> dict:
    """Choose every turn and effect of one recording without synthesising anything.

    ``speakers`` are voice ids (``voices.Voice``). Sentences come from ``bank`` as test-like
    material (new to every other split). Length is planned from an estimate of the speaking
    time (~16 characters/s at espeak's 150 wpm; the natural voices are close), so the plan
    does not depend on audio; recordings land within a few seconds of the target.
    """
    speakers = list(speakers)
    rng.shuffle(speakers)
    target = rng.uniform(min_seconds, max_seconds)
    turns, elapsed, speaker = [], 0.5, None
    while elapsed < target - 3.0:
        speaker = rng.choice([s for s in speakers if s != speaker])
        rate, pitch, length_scale = rng.randint(130, 190), rng.randint(35, 65), round(rng.uniform(0.9, 1.1), 3)
        texts = [bank.draw(split, rng, language, "test").text for _ in range(rng.choice([1, 1, 2]))]
        overlap = rng.uniform(0.2, 0.6) if turns and rng.random() < 0.15 else 0.0
        pause = rng.uniform(0.3, 1.5)
        turns.append({"speaker": speaker, "rate": rate, "pitch": pitch, "length_scale": length_scale,
                      "texts": texts, "overlap": overlap, "pause": pause})
        elapsed += sum(len(x) for x in texts) / (16.0 * rate / 150) + pause - overlap
    return {"language": language, "speakers": speakers, "turns": turns, "telephone": telephone,
            "rt60": rng.uniform(0.2, 0.6), "snr_db": rng.uniform(10.0, 20.0), "noise_seed": rng.getrandbits(32)}


def render_webinar(plan: dict, speakers: Speakers) -> tuple[np.ndarray, dict]:
    """Synthesise a planned recording; returns audio and {text, speaker, turns, snr_db, ...}.

    Turns follow each other with the planned pause, or start ``overlap`` seconds before the
    previous one ends (someone cuts in).
    """
    nrng = np.random.default_rng(plan["noise_seed"])
    pieces: list[tuple[int, np.ndarray]] = []
    turns: list[dict] = []
    cursor = 0.5
    for turn in plan["turns"]:
        chunks = []
        for text in turn["texts"]:
            chunks += [speakers.speak(Voice.parse(turn["speaker"]), text, turn["rate"], turn["pitch"],
                                      turn["length_scale"]),
                       np.zeros(int(0.15 * SR), np.float32)]
        audio = np.concatenate(chunks[:-1])
        if turn["overlap"] and turns:
            cursor = max(turns[-1]["start"] + 0.5, turns[-1]["end"] - turn["overlap"])
        start = int(cursor * SR)
        pieces.append((start, audio))
        turns.append({"speaker": turn["speaker"], "start": round(start / SR, 3),
                      "end": round((start + len(audio)) / SR, 3), "text": " ".join(turn["texts"])})
        cursor = (start + len(audio)) / SR + turn["pause"]
    total = max(s + len(a) for s, a in pieces) + int(0.5 * SR)
    mix = np.zeros(total, np.float32)
    for start, audio in pieces:
        mix[start:start + len(audio)] += audio
    mix = reverberate(mix, nrng, plan["rt60"])
    if plan["telephone"]:
        mix = telephone_band(mix)
    mix = add_noise_and_hum(mix, nrng, plan["snr_db"])
    mix *= 0.9 / max(1e-6, float(np.abs(mix).max()))
    meta = {"text": " ".join(t["text"] for t in turns), "speaker": ",".join(plan["speakers"]),
            "turns": turns, "snr_db": round(plan["snr_db"], 2), "rt60": round(plan["rt60"], 3),
            "telephone": plan["telephone"]}
    return mix.astype(np.float32), meta
