"""Variants in one batched call and the IP-Adapter style reference, on the tiny offline SDXL
with a tiny random IP-Adapter built here (issue 29)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from extras import require

os.environ["HF_HUB_OFFLINE"] = "1"
require("diffusers", "sdxl")
require("compel", "sdxl")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from astrowatch.backends.base import AstroTask  # noqa: E402
from astrowatch.backends.infotext import parse_infotext  # noqa: E402
from astrowatch.backends.sdxl.backend import SdxlBackend  # noqa: E402
from astrowatch.runtime.settings import config_from_mapping  # noqa: E402

pytestmark = [pytest.mark.sdxl, pytest.mark.torch]


def _config(base: Path, **sdxl: Any) -> Any:
    settings = {"model": str(base), "device": "cpu", "steps": 3, "width": 64, "height": 64, **sdxl}
    return config_from_mapping({"sdxl": settings}, base_dir=Path("."))


def _task(seed: int = 1, style: Path | None = None, **params: Any) -> AstroTask:
    return AstroTask(job_id="j", user="alice", chart=None, params=params, seed=seed,  # type: ignore[arg-type]
                     prompt="a natal chart, gold, indigo", negative_prompt="blurry",
                     style_image=style, style_sha256="ab" * 32 if style else None)


def _px(result: Any) -> np.ndarray:
    return np.asarray(result.image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def plain(tiny_sdxl):
    backend = SdxlBackend(_config(tiny_sdxl[0]))
    backend.start()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def adapted(tiny_sdxl, tmp_path_factory):
    from ip_adapter_tiny import build_tiny_ip_adapter

    folder = build_tiny_ip_adapter(tmp_path_factory.mktemp("ip"), tiny_sdxl[0])
    backend = SdxlBackend(_config(tiny_sdxl[0], ip_adapter={"model": str(folder), "scale": 1.0}))
    backend.start()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def boards(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("boards")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(2):
        path = folder / f"board{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths[0], paths[1]


def test_variants_in_one_batch_each_reproducible_from_its_seed(plain):
    results = plain.generate_variants(_task(), [11, 22, 33])
    assert [r.seed for r in results] == [11, 22, 33]
    assert len({_px(r).tobytes() for r in results}) == 3
    alone = plain.generate(_task(seed=22))
    assert np.abs(_px(alone) - _px(results[1])).max() <= 2  # batched vs alone: float noise only
    assert parse_infotext(results[2].infotext)["Seed"] == "33"


def test_ip_adapter_moodboard_steers_and_is_recorded(plain, adapted, boards):
    a, b = boards
    first, again = adapted.generate(_task(style=a)), adapted.generate(_task(style=a))
    assert np.array_equal(_px(first), _px(again))  # same moodboard + seed: same pixels
    other = adapted.generate(_task(style=b))
    assert not np.array_equal(_px(first), _px(other))  # another moodboard: other pixels
    assert first.params["ip_adapter"] == {"model": f"{adapted._loaded().ip_adapter}", "scale": 1.0,
                                          "reference_sha256": "ab" * 32}
    fields = parse_infotext(first.infotext)
    assert fields["IP-Adapter scale"] == "1.0" and fields["IP-Adapter reference"] == "abababab" + "ab"
    none = plain.generate(_task())
    assert np.array_equal(_px(adapted.generate(_task(style=a, ip_adapter_scale=0.0))), _px(none))  # scale 0
    no_ref = adapted.generate(_task())  # no moodboard: a neutral reference at scale 0, same as no adapter
    assert np.array_equal(_px(no_ref), _px(none))
    assert no_ref.params["ip_adapter"]["reference_sha256"] is None


def test_generate_with_moodboard_uses_it_as_the_style_reference(tiny_sdxl, boards, tmp_path, capsys):
    """``astrowatch generate --moodboard PATH``: the file steers the portrait through the adapter
    (same file + seed: same pixels; another file: other pixels) and the infotext names its sha256."""
    import hashlib

    import yaml
    from harness import FIXTURES
    from ip_adapter_tiny import build_tiny_ip_adapter

    from astrowatch.cli import main

    folder = build_tiny_ip_adapter(tmp_path / "ip", tiny_sdxl[0])
    settings = {"model": str(tiny_sdxl[0]), "device": "cpu", "steps": 3, "width": 64, "height": 64,
                "ip_adapter": {"model": str(folder), "scale": 1.0}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "astro": {"backend": "sdxl"},
                                      "sdxl": settings}), encoding="utf-8")
    theme = FIXTURES / "themes" / "astrowatch_minimal.json"

    def generate(board: Path, name: str) -> np.ndarray:
        out = tmp_path / name
        assert main(["generate", str(theme), "-o", str(out), "-c", str(config), "--seed", "5",
                     "--moodboard", str(board)]) == 0
        with Image.open(out) as img:
            parameters = img.info["parameters"]
            pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
        sha = hashlib.sha256(board.read_bytes()).hexdigest()
        assert parse_infotext(parameters)["IP-Adapter reference"] == sha[:10]
        said = capsys.readouterr().out
        assert "moodboard: style reference (IP-Adapter " in said and f"scale 1.0, sha256 {sha})" in said
        return pixels

    a, b = boards
    first = generate(a, "a.png")
    assert np.array_equal(generate(a, "a2.png"), first)
    assert not np.array_equal(generate(b, "b.png"), first)
