"""Charts and an offline CLIP tokenizer for the prompt-fusion tests.

The charts are built from the model directly, so the fusion tests (goldens included) do not
depend on the input parsers.  ``tiny_clip_model_dir`` writes a diffusers-like model folder
holding only ``tokenizer/`` and ``tokenizer_2/``: the smallest valid CLIP BPE (the 256
byte-level characters, the same with ``</w>``, start and end tokens; merges ``#version: 0.2``
only), so every character is a token and a 75-token budget forces heavy compaction.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from astrowatch.chart.model import SIGNS, Aspect, Chart, House, Point


def pt(name: str, sign: str, degree: float, house: int | None = None, retro: bool = False) -> Point:
    return Point(name, sign, SIGNS.index(sign) * 30.0 + degree, house, retro)


def leo_chart(user: str = "gaby") -> Chart:
    """Leo Sun, Pisces Moon, Scorpio rising; a stellium in house 5; Mercury retrograde."""
    points = [
        pt("sun", "Leo", 12.4, 5), pt("moon", "Pisces", 17.6, 12), pt("ascendant", "Scorpio", 22.4, 1),
        pt("mercury", "Virgo", 3.2, 5, True), pt("venus", "Cancer", 1.0, 4), pt("mars", "Taurus", 15.3, 10),
        pt("jupiter", "Cancer", 27.5, 5), pt("saturn", "Capricorn", 20.3, 2, True),
        pt("uranus", "Capricorn", 6.1, 2), pt("neptune", "Capricorn", 12.4, 2),
        pt("pluto", "Scorpio", 15.1, 12), pt("medium_coeli", "Virgo", 8.4, 10),
    ]
    aspects = [
        Aspect("sun", "mars", "square", 2.96), Aspect("mars", "pluto", "opposition", 0.19),
        Aspect("moon", "saturn", "sextile", 2.75), Aspect("pluto", "mars", "opposition", 0.19),
        Aspect("venus", "jupiter", "quincunx", 0.05), Aspect("sun", "neptune", "trine", 6.5),
        Aspect("moon", "venus", "trine", 1.4),
    ]
    houses = [House(i + 1, SIGNS[(7 + i) % 12], ((7 + i) % 12) * 30.0 + 22.4) for i in range(12)]
    return Chart(user=user, points={p.name: p for p in points}, houses=houses, aspects=aspects,
                 source_format="test")


def capricorn_chart() -> Chart:
    """No birth time: no Ascendant, no houses; the file gives its dominants."""
    points = [
        pt("sun", "Capricorn", 2.0), pt("moon", "Gemini", 28.0), pt("mercury", "Sagittarius", 20.0),
        pt("venus", "Aquarius", 5.0), pt("mars", "Aries", 11.0), pt("saturn", "Libra", 9.0, retro=True),
    ]
    aspects = [Aspect("sun", "mars", "square", 1.0), Aspect("venus", "mars", "sextile", 6.0)]
    return Chart(user="lou", points={p.name: p for p in points}, aspects=aspects,
                 dominant_element="Air", dominant_modality="Cardinal", source_format="test")


def aries_chart() -> Chart:
    """Fire and cardinal: Aries Sun, Sagittarius Moon, Cancer rising; the tightest aspect
    involves the North Node, which makes no motif."""
    points = [
        pt("sun", "Aries", 20.0, 10), pt("moon", "Sagittarius", 3.0, 6), pt("ascendant", "Cancer", 8.0, 1),
        pt("mercury", "Aries", 2.0, 9), pt("venus", "Pisces", 25.0, 9), pt("mars", "Leo", 14.0, 2),
        pt("jupiter", "Libra", 19.0, 4, True), pt("saturn", "Aries", 28.0, 10),
        pt("chiron", "Cancer", 1.0, 12), pt("true_node", "Capricorn", 20.0, 7),
    ]
    aspects = [
        Aspect("sun", "jupiter", "opposition", 1.0), Aspect("sun", "saturn", "conjunction", 8.0),
        Aspect("moon", "mars", "trine", 0.5), Aspect("mercury", "chiron", "square", 1.0),
        Aspect("venus", "true_node", "sextile", 4.0), Aspect("sun", "true_node", "square", 0.3),
    ]
    return Chart(user="maël", points={p.name: p for p in points}, aspects=aspects, source_format="test")


def libra_chart() -> Chart:
    """Earth and mutable: Libra Sun, Taurus Moon, Virgo rising, one aspect, no retrograde."""
    points = [
        pt("sun", "Libra", 5.0, 1), pt("moon", "Taurus", 14.0, 8), pt("ascendant", "Virgo", 29.0, 1),
        pt("mercury", "Scorpio", 1.0, 2), pt("venus", "Virgo", 20.0, 12), pt("mars", "Gemini", 9.0, 9),
        pt("jupiter", "Gemini", 12.0, 9), pt("saturn", "Pisces", 7.0, 6),
    ]
    aspects = [Aspect("mars", "jupiter", "conjunction", 3.0)]
    return Chart(user="sam", points={p.name: p for p in points}, aspects=aspects, source_format="test")


CHARTS = {"leo": leo_chart, "capricorn": capricorn_chart, "aries": aries_chart, "libra": libra_chart}


def tiny_clip_model_dir(root: Path) -> Path:
    """A model folder with ``tokenizer/`` and ``tokenizer_2/`` (pad "!") built offline."""
    from sdxl_tiny import tiny_tokenizers

    tok, tok_2 = tiny_tokenizers(root / "raw")
    model = root / "model"
    tok.save_pretrained(model / "tokenizer")
    tok_2.save_pretrained(model / "tokenizer_2")
    return model


def clip_vocab_wheel() -> Path | None:
    """The ``open-clip-torch`` wheel that ``make test`` downloads (``pip download --no-deps``: the
    file only, never installed, so no torchvision): it ships OpenAI CLIP's BPE vocabulary."""
    named = os.environ.get("ASTROWATCH_CLIP_WHEEL")
    if named:
        return Path(named)
    found = sorted((Path(__file__).resolve().parents[2] / "build" / "wheels").glob("open_clip_torch-*.whl"))
    return found[-1] if found else None


def _byte_characters() -> list[str]:
    """GPT-2/CLIP ``bytes_to_unicode().values()``: printable bytes as themselves, the rest shifted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def real_clip_tokenizer_dir(wheel: Path, root: Path) -> Path:
    """A CLIPTokenizer folder (``vocab.json`` + ``merges.txt``) built from the wheel's
    ``bpe_simple_vocab_16e6.txt.gz`` exactly as OpenAI's ``SimpleTokenizer`` builds its vocabulary:
    the 256 byte characters, the same with ``</w>``, the 48,894 merges, then the two specials
    (49,408 entries: the vocabulary of SDXL's ``tokenizer/``)."""
    import gzip
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        lines = gzip.decompress(zf.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = _byte_characters()
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return root


def real_clip_tokenizer(tmp: Path) -> Any:
    """The real CLIP tokenizer: ``$ASTROWATCH_CLIP_TOKENIZER`` (an SDXL ``tokenizer/`` folder), else
    one built from the vocabulary in the ``open-clip-torch`` wheel; skips (a reason CI refuses:
    tests/support/skip_allowlist.txt) when neither is there."""
    import pytest
    from transformers import CLIPTokenizer

    folder = os.environ.get("ASTROWATCH_CLIP_TOKENIZER")
    if not folder:
        wheel = clip_vocab_wheel()
        if wheel is None:
            pytest.skip("no real CLIP vocabulary: make test downloads it "
                        "(pip download --no-deps open-clip-torch -d build/wheels)")
        folder = str(real_clip_tokenizer_dir(wheel, tmp))
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
