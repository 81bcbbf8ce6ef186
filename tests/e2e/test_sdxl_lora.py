"""LoRA adapters on the tiny offline SDXL: real diffusers + peft, LoRA files made by peft and saved
with diffusers' ``save_lora_weights`` (tests/support/lora_tiny.py), loaded through ``SdxlBackend``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("diffusers")
pytest.importorskip("compel")
pytest.importorskip("peft")

import numpy as np
import torch
from lora_tiny import SELF_ATTENTION, make_sd15_lora, make_sdxl_lora
from PIL import Image

from astrowatch.backends.base import AstroTask
from astrowatch.backends.infotext import parse_infotext
from astrowatch.backends.loras import file_hashes
from astrowatch.backends.sdxl.backend import SdxlBackend
from astrowatch.core.errors import ConfigError, InputError
from astrowatch.runtime.settings import config_from_mapping

pytestmark = pytest.mark.sdxl

STYLE = {"path": "loras/style.safetensors", "weight": 0.8}
PER_USER = {"path": "datasets/{user}/lora/{user}.safetensors", "weight": 1.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lora_data")
    make_sdxl_lora(root / "loras" / "style.safetensors", seed=1)
    make_sdxl_lora(root / "datasets" / "gaby" / "lora" / "gaby.safetensors", seed=11)
    make_sdxl_lora(root / "datasets" / "lou" / "lora" / "lou.safetensors", seed=21)
    make_sd15_lora(root / "loras" / "sd15.safetensors")
    return root


def backend_for(base: Path, data: Path, loras: list[dict[str, Any]], **sdxl: Any) -> SdxlBackend:
    settings = {"model": str(base), "device": "cpu", "dtype": "float32", "steps": 3, "width": 64, "height": 64,
                "scheduler": "euler", "loras": loras, **sdxl}
    backend = SdxlBackend(config_from_mapping({"data_dir": str(data), "sdxl": settings}, base_dir=data))
    backend.start()
    return backend


@pytest.fixture(scope="module")
def backend(tiny_sdxl: tuple[Path, Path], data: Path) -> Iterator[SdxlBackend]:
    b = backend_for(tiny_sdxl[0], data, [STYLE, PER_USER])
    yield b
    b.close()


def run(backend: SdxlBackend, user: str, loras: Any = None) -> tuple[np.ndarray, Any]:
    plan = backend.plan_loras(user, loras)
    task = AstroTask(job_id="j", user=user, chart=None, params={"loras": plan}, seed=7,  # type: ignore[arg-type]
                     prompt="a lion of gold, stained glass", negative_prompt="blurry")
    result = backend.generate(task)
    return np.asarray(result.image.convert("RGB")), result


def base_weights(pipe: Any) -> dict[str, torch.Tensor]:
    """Every parameter of the UNet and both text encoders, named as in the loaded model (peft's
    ``base_layer`` wrapper left out of the name), LoRA parameters excluded."""
    out = {}
    for prefix, model in (("unet", pipe.unet), ("te1", pipe.text_encoder), ("te2", pipe.text_encoder_2)):
        for name, tensor in model.state_dict().items():
            if "lora_" not in name:
                out[f"{prefix}.{name.replace('.base_layer', '')}"] = tensor.detach().clone()
    return out


def test_a_lora_changes_the_image_and_weight_zero_gives_the_base_bit_for_bit(backend):
    base, _ = run(backend, "nobody", [])
    styled, _ = run(backend, "nobody", [{"name": "style", "weight": 0.8}])
    zero, _ = run(backend, "nobody", [{"name": "style", "weight": 0}])
    assert not np.array_equal(styled, base)
    assert np.array_equal(zero, base)
    again, _ = run(backend, "nobody", [])
    assert np.array_equal(again, base)  # switching back costs nothing and leaves nothing behind


def test_each_user_gets_their_own_adapter_without_reloading(backend):
    loads = backend._adapters.loads
    gaby, r_gaby = run(backend, "gaby")
    lou, _ = run(backend, "lou")
    nobody, r_nobody = run(backend, "nobody")
    gaby_again, _ = run(backend, "gaby")
    assert len({gaby.tobytes(), lou.tobytes(), nobody.tobytes()}) == 3
    assert np.array_equal(gaby, gaby_again)
    assert backend._adapters.loads - loads <= 2  # gaby's and lou's adapters, loaded once each
    assert "gaby" in r_gaby.infotext and "gaby" not in parse_infotext(r_nobody.infotext)["Lora hashes"]


def test_per_user_adapters_beyond_the_limit_are_evicted_and_reload_the_same(backend, monkeypatch):
    import astrowatch.backends.sdxl.lora as sdxl_lora

    gaby, _ = run(backend, "gaby")
    monkeypatch.setattr(sdxl_lora, "MAX_RESIDENT", 1)
    run(backend, "lou")
    assert sorted(n.split("_")[0] for n in backend._adapters.resident) == ["lou", "style"]
    loads = backend._adapters.loads
    again, _ = run(backend, "gaby")
    assert backend._adapters.loads == loads + 1 and np.array_equal(again, gaby)


def test_infotext_carries_tags_and_a1111_lora_hashes(backend, data):
    _, result = run(backend, "gaby")
    info = parse_infotext(result.infotext)
    assert info["prompt"] == "a lion of gold, stained glass <lora:style:0.8> <lora:gaby:1>"
    style_short = file_hashes(data / "loras" / "style.safetensors")[1]
    gaby_short = file_hashes(data / "datasets" / "gaby" / "lora" / "gaby.safetensors")[1]
    assert info["Lora hashes"] == f"style: {style_short}, gaby: {gaby_short}"
    assert '"style: ' in result.infotext  # a value with ':' and ',' is quoted, as A1111 writes it


def test_unloading_a_users_adapter_restores_the_base_weights_exactly(tiny_sdxl, data):
    b = backend_for(tiny_sdxl[0], data, [PER_USER])
    try:
        before = base_weights(b._pipes.base)
        run(b, "gaby")
        run(b, "lou")
        adapters = b._adapters
        gaby = next(n for n in adapters.resident if n.startswith("gaby_"))
        adapters.unload(gaby)
        assert base_weights(b._pipes.base).keys() == before.keys()
        assert all(torch.equal(t, before[k]) for k, t in base_weights(b._pipes.base).items())
        adapters.unload_all()  # the last one: peft layers gone, the modules as loaded
        after = {f"unet.{k}": v for k, v in b._pipes.base.unet.state_dict().items()}
        assert all(".base_layer" not in k and "lora" not in k for k in after)
        assert all(torch.equal(v, before[k]) for k, v in after.items())
    finally:
        b.close()


def test_a_replaced_user_file_loads_as_a_new_adapter_and_the_old_one_goes(tiny_sdxl, data, tmp_path):
    user_file = tmp_path / "datasets" / "max" / "lora" / "max.safetensors"
    make_sdxl_lora(user_file, seed=31)
    b = backend_for(tiny_sdxl[0], tmp_path, [PER_USER])
    try:
        first, _ = run(b, "max")
        make_sdxl_lora(user_file, seed=32)  # retrained
        second, _ = run(b, "max")
        assert not np.array_equal(first, second)
        assert [n.split("_")[0] for n in b._adapters.resident] == ["max"]
    finally:
        b.close()


def test_the_refiner_is_left_alone_unless_asked(tiny_sdxl, data):
    b = backend_for(tiny_sdxl[0], data, [STYLE], refiner=str(tiny_sdxl[1]))
    try:
        run(b, "nobody")
        assert not getattr(b._pipes.refiner.unet, "peft_config", None)
    finally:
        b.close()
    with pytest.raises(ConfigError, match="does not fit this SDXL model .* or its refiner"):
        backend_for(tiny_sdxl[0], data, [{**STYLE, "refiner": True}], refiner=str(tiny_sdxl[1]))


def test_refiner_true_puts_the_adapter_on_the_refiner_too(tiny_sdxl, data):
    make_sdxl_lora(data / "loras" / "glow.safetensors", seed=5, unet_targets=SELF_ATTENTION)
    glow = {"path": "loras/glow.safetensors", "weight": 1.0}
    images = {}
    for on_refiner in (True, False):
        b = backend_for(tiny_sdxl[0], data, [{**glow, "refiner": on_refiner}], refiner=str(tiny_sdxl[1]))
        try:
            assert bool(getattr(b._pipes.refiner.unet, "peft_config", None)) is on_refiner
            images[on_refiner] = run(b, "nobody")[0]
            images["plain"] = run(b, "nobody", [])[0]
            assert np.array_equal(run(b, "nobody", [{"name": "glow", "weight": 0}])[0], images["plain"])
        finally:
            b.close()
    assert len({images[True].tobytes(), images[False].tobytes(), images["plain"].tobytes()}) == 3


def test_a_lora_for_another_base_is_a_clear_error_and_leaves_no_trace(backend, data):
    base, _ = run(backend, "nobody", [])
    with pytest.raises(InputError, match=r"LoRA 'sd15' \(.*sd15.safetensors\) does not fit this SDXL model"):
        run(backend, "nobody", [{"path": "loras/sd15.safetensors"}])
    after, _ = run(backend, "nobody", [])
    assert np.array_equal(after, base)
    assert not any(n.startswith("sd15") for n in backend._adapters.resident)


def test_bad_global_loras_stop_the_start_with_a_config_error(tiny_sdxl, data):
    with pytest.raises(ConfigError, match="sdxl.loras: LoRA 'sd15' .* does not fit this SDXL model"):
        backend_for(tiny_sdxl[0], data, [{"path": "loras/sd15.safetensors"}])
    with pytest.raises(ConfigError, match="sdxl.loras: .*nothere.safetensors does not exist"):
        backend_for(tiny_sdxl[0], data, [{"path": "loras/nothere.safetensors"}])


def test_a_corrupt_user_file_fails_that_job_only(backend, data, tmp_path):
    bad = data / "datasets" / "zoe" / "lora" / "zoe.safetensors"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    try:
        with pytest.raises(InputError, match=r"zoe.safetensors: not a .safetensors file"):
            run(backend, "zoe")
    finally:
        bad.unlink()
    image, _ = run(backend, "gaby")  # the backend still works
    assert image.shape == (64, 64, 3)


def test_enhance_runs_on_the_base_model(backend):
    from astrowatch.backends.base import EnhanceTask

    run(backend, "gaby")
    task = EnhanceTask(job_id="e", user="gaby", image=Image.new("RGB", (32, 32), (90, 40, 200)),
                       source_name="p.png", params={}, seed=3)
    backend.enhance(task)
    assert backend._adapters.active == []
