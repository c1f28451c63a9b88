"""Real-speech fetch: transcript parsing, set planning, and the whole fetch against generated
packages served by a stand-in apt-get (dpkg-deb builds and unpacks them for real), plus one run
against Debian itself when apt and the mirror are there."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from borealis_eval.data import real
from borealis_eval.data.manifest import read_manifest
from borealis_eval.data.real import (
    RealDataError,
    RealSizes,
    fetch_real,
    parse_asterisk,
    parse_festvox,
)

# ------------------------------------------------------------------ parsing (no packages needed)


def test_festvox_lines_lose_stress_marks_and_keep_the_rest():
    rows, problems = parse_festvox(textwrap.dedent('''\
        ( ru_0001 "Глаз+а ленивые, серо-карие, - с искоркой." )
        ( ru_0002 "+Окна, и х+а+ос." )

        (ru_0003   "Пробелы   внутри" )
        ( ru_0004 "" )
        ( ru_0001 "повтор" )
        garbage line
        '''))
    assert rows == {"ru_0001": "Глаза ленивые, серо-карие, - с искоркой.", "ru_0002": "Окна, и хаос.",
                    "ru_0003": "Пробелы внутри"}
    assert [p.split(":")[0] for p in problems] == ["line 5", "line 6", "line 7"]
    assert "empty transcript" in problems[0] and "repeated" in problems[1] and "not `( id" in problems[2]


def test_asterisk_lines_drop_annotations_and_non_speech():
    rows, problems = parse_asterisk(textwrap.dedent('''\
        ; Core Asterisk Sounds in Russian

        agent-pass: Введите пароль и нажмите решетку.
        beep: [this is a simple beep tone]
        confbridge-join: <beep ascending>
        silence/1: (1 second of silence)
        is:
        conf-adminmenu: conf-adminmenu: Нажмите 1 чтобы выключить микрофон
        letters/dot: Точка [.]
        vm-review-nonurgent: Нажмите 4, чтобы убрать пометку (статус) «важно»
        dictate/pause: Пауза.
        to-listen-to-it: Что бы его прослушать, нажмите 1 что бы ни было
        agent-pass: again
        no colon here
        '''), "ru")
    assert rows == {"agent-pass": "Введите пароль и нажмите решетку.",
                    "conf-adminmenu": "Нажмите 1 чтобы выключить микрофон", "letters/dot": "Точка",
                    "vm-review-nonurgent": "Нажмите 4, чтобы убрать пометку статус «важно»",  # it is read aloud
                    "dictate/pause": "Пауза.", "to-listen-to-it": "Чтобы его прослушать, нажмите 1 что бы ни было"}
    assert len(problems) == 6
    assert sum("no spoken text" in p for p in problems) == 4
    assert any("repeated" in p for p in problems) and any("not `name: text`" in p for p in problems)


def test_asterisk_english_notes_and_keypad_symbols():
    rows, _ = parse_asterisk(textwrap.dedent('''\
        spy-iax2: IAX (note: does not say "2")
        vm-intro: Please leave your message after the tone. (simple tone sound plays)
        dictate/both_help: press * to toggle pause, press # to enter a new dictation filename
        spy-misdn: M I S D N
        '''), "en")
    assert rows["spy-iax2"] == "IAX"
    assert rows["vm-intro"] == "Please leave your message after the tone."
    assert rows["dictate/both_help"] == "press star to toggle pause, press pound to enter a new dictation filename"
    assert real.spelled(rows["spy-misdn"]) and real.spelled("Д А Х Д И")
    assert not real.spelled(rows["vm-intro"]) and not real.spelled("Нажмите 1, 2 и 3")


def test_word_count_ignores_lone_punctuation():
    assert real.word_count("Нажмите 1, 2 - чтобы выйти.") == 5


def test_festvox_split_holds_out_whole_blocks():
    held = [n for n in range(1, 201) if real.festvox_heldout(f"ru_{n:04d}")]
    assert held == list(range(41, 61)) + list(range(141, 161))
    assert real.festvox_heldout("festvox-ru.ru_0050")


def test_sizes_reject_negative_and_fractional():
    with pytest.raises(ValueError, match="whole numbers"):
        RealSizes(ru_ivr=-1)
    with pytest.raises(ValueError, match="whole numbers"):
        RealSizes(longform=1.5)


# ------------------------------------------------------------------ generated packages

FESTVOX_LINES = [
    'broken line',
    '( ru_0070 "Транскрипт, без записи." )',  # no wav
    '( ru_0041 "повтор" )',
]
RU_PROMPTS = {
    "agent-pass": ("Введите пароль и нажмите решетку.", 3.0),
    "conf-adminmenu": ("conf-adminmenu: Нажмите 1 чтобы выключить свой микрофон", 4.0),
    "dictate/pause": ("Пауза.", 1.0),
    "letters/dot": ("Точка [.]", 1.0),
    "beep": ("[this is a simple beep tone]", 1.0),
    "is": ("", 1.0),
    "demo-instruct": ("Если вы хотите получить более детальную информацию, нажмите 2.", 65.0),
    "no-wav-here": ("У этого приглашения нет записи вовсе.", None),
    "priv-callee-options": ("Наберите 1, чтобы принять звонок сейчас и всегда.", 35.0),  # over 30 s: not short
    **{f"vm-prompt-{k:02d}": (f"Голосовое сообщение номер {k} для вас.", 3.0) for k in range(12)},
}
EN_PROMPTS = {
    "spy-iax2": ("IAX (note: does not say \"2\") is spoken here now", 3.0),
    "spy-misdn": ("M I S D N", 3.0),
    "silence/1": ("(1 second of silence)", 1.0),
    "demo-instruct": ("If you would like to learn more technical information dial 2 now.", 66.0),
    **{f"queue-{k:02d}": (f"Please hold, caller number {k} is next.", 6.0) for k in range(24)},
}


def _wav(path: Path, seconds: float, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, subtype="PCM_16")


def _package(root: Path, name: str, version: str, files: dict[str, bytes | None], wavs: dict[str, tuple]) -> Path:
    """A real .deb built with dpkg-deb from the given files and (seconds, rate) wavs."""
    tree = root / "trees" / name
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
                                             "Maintainer: test <t@example.org>\nDescription: fixture\n")
    doc = tree / "usr/share/doc" / name
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(f"copyright notice of {name}\n")
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    for rel, (seconds, sr) in wavs.items():
        _wav(tree / rel, seconds, sr)
    deb = root / "repo" / f"{name}_{version}_all.deb"
    deb.parent.mkdir(exist_ok=True)
    subprocess.run(["dpkg-deb", "-Znone", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


FAKE_APT = '''\
"""Stand-in for apt-get: serves the .debs of $FAKE_APT_REPO with their real SHA256."""
import hashlib, os, shutil, sys
from pathlib import Path

repo, state = Path(os.environ["FAKE_APT_REPO"]), Path(os.environ["FAKE_APT_STATE"])
args = sys.argv[1:]
with open(state / "calls.log", "a") as f:
    f.write(" ".join(args) + "\\n")
if args == ["update"]:
    (state / "updated").touch()
    sys.exit(0)
unlisted = os.environ.get("FAKE_APT_UNLISTED", "")
def find(pkg):
    if pkg == unlisted and not (state / "updated").exists():
        return None
    return next(iter(repo.glob(pkg.split("=")[0] + "_*.deb")), None)
if args[:2] == ["download", "--print-uris"]:
    lines = []
    for pkg in args[2:]:
        deb = find(pkg)
        if deb is None:
            print(f"E: Unable to locate package {pkg}", file=sys.stderr)
            sys.exit(100)
        sha = hashlib.sha256(deb.read_bytes()).hexdigest()
        lines.append(f"'file://{deb}' {deb.name} {deb.stat().st_size} SHA256:{sha}")
    print("\\n".join(lines))
    sys.exit(0)
if args[0] == "download":
    for pkg in args[1:]:
        deb = find(pkg)
        if deb is None:
            print(f"E: Unable to locate package {pkg}", file=sys.stderr)
            sys.exit(100)
        shutil.copyfile(deb, deb.name)
        if pkg.split("=")[0] == os.environ.get("FAKE_APT_CORRUPT"):
            with open(deb.name, "ab") as f:
                f.write(b"corrupted in transit")
    sys.exit(0)
sys.exit(f"fake apt-get: unsupported {args}")
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb (Debian's dpkg) is needed to build and unpack the fixture packages")
    root = tmp_path_factory.mktemp("debrepo")
    voice = real.FESTVOX_DIR
    # ids 1-40 short (training blocks 0-1); 41-60 (held-out block 2) long enough for one join
    numbers = list(range(1, 61))
    txt = [f'( ru_{n:04d} "Чт+ение номер {n}, и ещё слова." )' for n in numbers] + FESTVOX_LINES
    _package(root, "festvox-ru", "0.5+dfsg-6", {f"{voice}/etc/txt.done.data": "\n".join(txt).encode()},
             {f"{voice}/wav/ru_{n:04d}.wav": (7.0 if n > 40 else 1.0, 16_000) for n in numbers + [99]})
    for lang, prompts, voice_dir in (("ru", RU_PROMPTS, "ru_RU_f_IvrvoiceRU"), ("en", EN_PROMPTS, "en_US_f_Allison")):
        text = f"; Core Asterisk Sounds in {lang}\n" + "".join(f"{n}: {t}\n" for n, (t, _) in prompts.items())
        name = f"asterisk-core-sounds-{lang}"
        _package(root, name, "1.6.1-1", {f"usr/share/doc/{name}/core-sounds-{lang}.txt.gz": gzip.compress(text.encode())}, {})
        _package(root, f"{name}-wav", "1.6.1-1", {},
                 {f"usr/share/asterisk/sounds/{voice_dir}/{n}.wav": (s, 8_000) for n, (_, s) in prompts.items() if s})
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f"#!{sys.executable}\n{FAKE_APT}")
    (bin_dir / "apt-get").chmod(0o755)
    return root


@pytest.fixture
def fake_apt(repo, tmp_path, monkeypatch):
    state = tmp_path / "apt-state"
    state.mkdir()
    monkeypatch.setenv("FAKE_APT_REPO", str(repo / "repo"))
    monkeypatch.setenv("FAKE_APT_STATE", str(state))
    monkeypatch.setenv("PATH", f"{repo / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return state


SMALL = RealSizes(ru_read=4, ru_ivr=5, en_ivr=6, longform=4)


def _calls(state: Path) -> list[str]:
    log = state / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_fetch_builds_the_sets(fake_apt, tmp_path):
    dest = fetch_real(tmp_path / "real", SMALL, cache=tmp_path / "debs")
    sets = {n: read_manifest(dest / f"{n}.jsonl") for n in ("real_ru_read", "real_ru_ivr", "real_en_ivr",
                                                            "real_longform")}
    assert {n: len(r) for n, r in sets.items()} == {"real_ru_read": 4, "real_ru_ivr": 5, "real_en_ivr": 6,
                                                      "real_longform": 4}
    for rows in sets.values():
        for r in rows:
            assert {"id", "audio", "text", "language", "duration", "speaker", "stratum", "source", "license",
                    "attribution"} <= set(r)
            assert Path(r["audio_path"]).is_file() and not Path(r["audio"]).is_absolute()
            assert r["duration"] == pytest.approx(sf.info(r["audio_path"]).duration, abs=1e-3)
    read = sets["real_ru_read"]
    assert all(real.festvox_heldout(r["id"]) and "+" not in r["text"] for r in read)
    assert {r["stratum"] for r in read} == {"real-read-speaker-in-training"} and read[0]["source"] == "festvox-ru 0.5+dfsg-6"
    ivr = sets["real_ru_ivr"] + sets["real_en_ivr"]
    assert all(real.word_count(r["text"]) >= 4 for r in ivr)
    assert all("[" not in r["text"] and "(" not in r["text"] for r in ivr)
    assert {r["license"] for r in sets["real_en_ivr"]} == {"CC-BY-SA-3.0"}

    long = {r["id"]: r for r in sets["real_longform"]}
    assert list(long) == ["longform.asterisk-ru.demo-instruct", "longform.asterisk-en.demo-instruct",
                          "longform.festvox-ru.ru_0041--ru_0049", "longform.asterisk-en.spy-iax2--queue-08"]
    assert [r["stratum"] for r in long.values()] == ["real-monologue"] * 2 + ["real-joined"] * 2
    assert [r["language"] for r in long.values()] == ["ru", "en", "ru", "en"]
    for r in long.values():
        assert sf.info(r["audio_path"]).samplerate == 16_000
    joined = long["longform.festvox-ru.ru_0041--ru_0049"]
    assert 60 <= joined["duration"] <= 90 and joined["duration"] == pytest.approx(9 * 7.0 + 8 * 0.5, abs=0.01)
    assert joined["text"].startswith("Чтение номер 41, и ещё слова. Чтение номер 42,")
    assert "joined from 9 recordings" in joined["attribution"] and "resampled" not in joined["attribution"]
    assert "resampled from 8000 Hz" in long["longform.asterisk-ru.demo-instruct"]["attribution"]
    # no recording in two sets
    used = [r["id"] for n in ("real_ru_read", "real_ru_ivr", "real_en_ivr") for r in sets[n]]
    used += [p for r in long.values() for p in r["parts"]]
    assert len(used) == len(set(used))
    assert "asterisk-en.spy-misdn" not in used  # spelled letters are not an IVR sentence

    meta = json.loads((dest / "SOURCES.json").read_text())
    assert [p["package"] for p in meta["packages"]] == list(real.DEBS)
    deb = tmp_path / "debs" / "festvox-ru_0.5+dfsg-6_all.deb"
    assert meta["packages"][0]["sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()
    assert sorted(p.name for p in (dest / "licenses").iterdir()) == sorted(f"{p}.copyright" for p in real.DEBS)
    assert "festvox-ru | 0.5+dfsg-6" in (dest / "SOURCES.md").read_text()
    assert any("ru_0070 has a transcript but no wav" in p for p in meta["problems"])
    assert any("ru_0041 repeated" in p for p in meta["problems"])
    assert any("no-wav-here has a transcript but no wav" in p for p in meta["problems"])


def test_second_fetch_only_verifies_and_a_damaged_folder_is_rebuilt(fake_apt, tmp_path):
    dest, cache = tmp_path / "real", tmp_path / "debs"
    fetch_real(dest, SMALL, cache=cache)
    manifest = (dest / "real_en_ivr.jsonl").read_bytes()
    n_calls = len(_calls(fake_apt))
    fetch_real(dest, SMALL, cache=cache)
    assert len(_calls(fake_apt)) == n_calls  # nothing asked of apt, nothing rebuilt
    wav = next((dest / "audio" / "real_en_ivr").iterdir())
    wav.write_bytes(wav.read_bytes()[:100])  # damaged: the next call rebuilds from the cache
    fetch_real(dest, SMALL, cache=cache)
    assert (dest / "real_en_ivr.jsonl").read_bytes() == manifest
    assert not any("download" in c and "--print-uris" not in c for c in _calls(fake_apt)[n_calls:])
    assert sf.info(str(wav)).duration > 1


def test_sizes_nest_and_change_the_folder(fake_apt, tmp_path):
    cache = tmp_path / "debs"
    big = fetch_real(tmp_path / "a", RealSizes(ru_read=8, ru_ivr=100, en_ivr=8, longform=4), cache=cache)
    all_ru_ivr = [r["id"] for r in read_manifest(big / "real_ru_ivr.jsonl")]
    assert len(all_ru_ivr) == 14 and "asterisk-ru.priv-callee-options" not in all_ru_ivr
    small = fetch_real(tmp_path / "b", SMALL, cache=cache)
    for name in ("real_ru_read", "real_ru_ivr", "real_en_ivr"):
        ids_big = {r["id"] for r in read_manifest(big / f"{name}.jsonl")}
        assert {r["id"] for r in read_manifest(small / f"{name}.jsonl")} < ids_big
    again = fetch_real(tmp_path / "a", SMALL, cache=cache)  # other sizes: rebuilt in place
    assert len(read_manifest(again / "real_ru_ivr.jsonl")) == 5


def test_a_crash_leaves_nothing_half_written(fake_apt, tmp_path, monkeypatch):
    dest, cache = tmp_path / "real", tmp_path / "debs"

    def crash(*a, **k):
        raise KeyboardInterrupt

    copy_licences = real._copy_licences
    monkeypatch.setattr(real, "_copy_licences", crash)
    with pytest.raises(KeyboardInterrupt):
        fetch_real(dest, SMALL, cache=cache)
    assert not dest.exists() and not list(tmp_path.glob(".real.build-*"))
    # a killed build (no cleanup at all) leaves its temporary folders; the next call removes them
    (tmp_path / ".real.build-x").mkdir()
    (cache / ".unpack-festvox-ru-x").mkdir()
    monkeypatch.setattr(real, "_copy_licences", copy_licences)
    fetch_real(dest, SMALL, cache=cache)
    assert (dest / "SOURCES.json").is_file()
    assert not (tmp_path / ".real.build-x").exists() and not (cache / ".unpack-festvox-ru-x").exists()


def test_checksum_mismatch_is_an_error(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_APT_CORRUPT", "asterisk-core-sounds-en")
    with pytest.raises(RealDataError, match="SHA256 .* differs from apt's index"):
        fetch_real(tmp_path / "real", SMALL, cache=tmp_path / "debs")
    assert not (tmp_path / "debs" / "asterisk-core-sounds-en_1.6.1-1_all.deb").exists()
    assert not (tmp_path / "real").exists()


def test_apt_update_runs_only_when_the_lists_lack_a_package(fake_apt, tmp_path, monkeypatch):
    fetch_real(tmp_path / "a", SMALL, cache=tmp_path / "debs")
    assert "update" not in _calls(fake_apt)
    monkeypatch.setenv("FAKE_APT_UNLISTED", "festvox-ru")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RealDataError, match="sudo apt-get update"):
        fetch_real(tmp_path / "b", SMALL, cache=tmp_path / "debs")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    fetch_real(tmp_path / "b", SMALL, cache=tmp_path / "debs")
    assert _calls(fake_apt).count("update") == 1


def test_without_apt_the_error_names_what_to_install(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RealDataError, match="lacks apt-get and dpkg-deb") as e:
        fetch_real(tmp_path / "real", SMALL, cache=tmp_path / "debs")
    assert "\n" not in str(e.value) and not (tmp_path / "real").exists()


def test_a_foreign_folder_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(RealDataError, match="not a real-speech folder"):
        fetch_real(tmp_path / "mine", SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------ Debian itself

def test_fetch_from_debian_end_to_end(tmp_path):
    """The real packages, cached in the shared cache (BOREALIS_CACHE_DIR or ~/.cache/borealis-eval)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get/dpkg-deb absent: not a Debian-like machine (CI installs the test image with them)")
    cache = real.deb_cache()
    try:
        infos = real.deb_infos(list(real.DEBS))
    except RealDataError as e:
        pytest.skip(f"apt does not offer the packages here: {e}")
    for i in infos.values():
        if not (cache / i.filename).is_file():
            try:
                urllib.request.urlopen(urllib.request.Request(i.url, method="HEAD"), timeout=10).close()
            except OSError as e:
                pytest.skip(f"Debian mirror unreachable and {i.filename} not cached: {e}")
    dest = fetch_real(tmp_path / "real", RealSizes(ru_read=3, ru_ivr=3, en_ivr=3, longform=4), cache=cache)
    meta = json.loads((dest / "SOURCES.json").read_text())
    assert {p["package"]: p["sha256"] for p in meta["packages"]} == {p: i.sha256 for p, i in infos.items()}
    long = read_manifest(dest / "real_longform.jsonl")
    assert long[0]["id"] == "longform.asterisk-ru.demo-instruct" and 73 < long[0]["duration"] < 75
    assert all(60 <= r["duration"] <= 90 for r in long)
    read = read_manifest(dest / "real_ru_read.jsonl")
    assert all(r["text"] and "+" not in r["text"] for r in read)


def test_cli_reports_a_missing_apt_in_one_line(tmp_path, monkeypatch, capsys):
    from borealis_eval.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["data", "fetch", "real", "--out", str(tmp_path / "real")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: real speech comes from Debian packages") and err.count("\n") == 1


def test_the_study_loads_the_sets_as_manifest_sources(fake_apt, tmp_path):
    """Extra fields (stratum, source, licence, parts) pass through the loader untouched; the
    long-form set needs a max_duration over its 60-90 s recordings."""
    from borealis_eval.config import AudioSet
    from borealis_eval.data.sources import load_audio_set

    dest = fetch_real(tmp_path / "real", SMALL, cache=tmp_path / "debs")
    ivr = load_audio_set(AudioSet(name="real_en_ivr", source={"kind": "manifest", "path": str(dest / "real_en_ivr.jsonl")}))
    assert len(ivr) == 6 and ivr[0].load().dtype == np.float32
    long = load_audio_set(AudioSet(name="real_longform", max_duration=120,
                                   source={"kind": "manifest", "path": str(dest / "real_longform.jsonl")}))
    assert [it.language for it in long] == ["ru", "en", "ru", "en"]
    assert len(long[0].load()) == pytest.approx(16_000 * long[0].duration, abs=2)
