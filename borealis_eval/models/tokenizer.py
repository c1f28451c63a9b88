"""Tokenizers for the LLM side: load one by reference, or train a byte-level BPE on corpus text.

A tokenizer trained here gets ChatML special tokens and a ChatML chat template, so prompts
for an LLM trained from scratch look exactly like those for Qwen3.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import jinja2
from filelock import FileLock
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from borealis_eval.paths import cache_root

from borealis_eval.models.llm_family import CHATML_TEMPLATE

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def load_tokenizer(ref: str):
    from borealis_eval.models.refs import resolve

    r = resolve(ref)
    # a tokenizer without a chat template gets its LLM family's one in SpeechLM (llm_family.py)
    return AutoTokenizer.from_pretrained(r.path_or_id, **r.kwargs())


def layout_pieces(user_content: str, marks: Sequence[str] = ()) -> list[str]:
    """The fixed text of a ChatML prompt whose user turn is `user_content` (role names, an audio
    prompt): the rendered prompt split at the special tokens and at `marks` (e.g. the audio mark),
    whitespace-only pieces dropped. A BPE trained on transcripts alone splits these into letters
    ("Transcribe the audio." is 12 tokens at 1,500 types): about 30 positions of every example."""
    text = jinja2.Template(CHATML_TEMPLATE).render(messages=[{"role": "user", "content": user_content}],
                                                   add_generation_prompt=True)
    pieces = re.split("|".join(re.escape(s) for s in (*SPECIALS, *marks)), text)
    return list(dict.fromkeys(p for p in pieces if p.strip()))


def train_bpe_tokenizer(texts: list[str], vocab_size: int, whole: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Train (or load from cache) a byte-level BPE on `texts`; cached by content, size and `whole`:
    strings added as whole tokens after training (the prompt layout's fixed pieces, `layout_pieces`),
    so the constant part of every example costs one position per piece."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    h = hashlib.sha1()
    for t in sorted(set(texts)):
        h.update(t.encode("utf-8") + b"\0")
    for w in whole:
        h.update(b"\1" + w.encode("utf-8"))
    key = f"bpe{vocab_size}-{h.hexdigest()[:16]}"
    folder = cache_root() / "tokenizers" / key
    with FileLock(str(folder) + ".lock"):
        if not (folder / "tokenizer.json").is_file():
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                special_tokens=SPECIALS,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
            tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
            if whole:
                tok.add_tokens([AddedToken(w, normalized=False, special=False) for w in whole])
            fast = PreTrainedTokenizerFast(
                tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
            )
            fast.chat_template = CHATML_TEMPLATE
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
            fast.save_pretrained(tmp)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
    return AutoTokenizer.from_pretrained(folder)
