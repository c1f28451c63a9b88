"""Raw hypotheses cached on disk, keyed by model identity, eval-set content and decoding settings.

Re-scoring (another normaliser, another statistic, a resumed study) never decodes again; an
entry is one JSON file written atomically, so a crash never leaves a partial entry that looks
valid, and a damaged entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os

from borealis_eval.atomic import atomic_path
from borealis_eval.data.sources import AudioItem
from borealis_eval.paths import cache_root


class DecodeCache:
    """Folder of entries (`cache_root()/decodes` by default); `key` names one, `get`/`put` read and write it."""

    def __init__(self, root: "os.PathLike | None" = None):
        self.dir = os.fspath(root or cache_root() / "decodes")
        os.makedirs(self.dir, exist_ok=True)
        self.hits = 0

    @staticmethod
    def key(model_id: str, set_name: str, items: list[AudioItem], audio_keys: list[str], params: dict) -> str:
        h = hashlib.sha1(json.dumps({"model": model_id, "set": set_name, "params": params}, sort_keys=True).encode())
        for it, a in zip(items, audio_keys):
            h.update(f"{it.id}\0{it.text}\0{a}\n".encode())
        return h.hexdigest()

    def get(self, key: str) -> tuple[list[dict], float] | None:
        path = os.path.join(self.dir, key + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            records, seconds = data["records"], float(data["seconds"])
            if not isinstance(records, list):
                raise TypeError("records is not a list")
        except (OSError, ValueError, KeyError, TypeError):  # missing or damaged: decode again
            return None
        self.hits += 1
        return records, seconds

    def put(self, key: str, records: list[dict], seconds: float) -> None:
        with atomic_path(os.path.join(self.dir, key + ".json")) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"records": records, "seconds": seconds}, f, ensure_ascii=False)
