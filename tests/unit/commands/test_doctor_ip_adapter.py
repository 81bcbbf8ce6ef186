"""``astrowatch doctor`` says whether the ``sdxl.ip_adapter`` folder is complete (no torch loaded)."""

from __future__ import annotations

from pathlib import Path

from astrowatch.commands.doctor import FAIL, OK, _ip_adapter
from astrowatch.runtime.settings import config_from_mapping


def _config(tmp_path: Path, **ip: object) -> object:
    return config_from_mapping({"sdxl": {"ip_adapter": ip}}, base_dir=tmp_path)


def test_ip_adapter_folder_complete_or_what_it_lacks(tmp_path: Path) -> None:
    status, detail = _ip_adapter(_config(tmp_path))
    assert status == OK and "not configured" in detail
    folder = tmp_path / "IP-Adapter"
    encoder = folder / "sdxl_models" / "image_encoder"
    encoder.mkdir(parents=True)
    status, detail = _ip_adapter(_config(tmp_path, model="IP-Adapter"))
    assert status == FAIL
    assert "ip-adapter_sdxl.safetensors is not a file" in detail and "config.json is missing" in detail
    assert "holds no model.safetensors" in detail
    (folder / "sdxl_models" / "ip-adapter_sdxl.safetensors").write_bytes(b"x")
    (encoder / "config.json").write_text("{}")
    (encoder / "model.safetensors").write_bytes(b"x")
    status, detail = _ip_adapter(_config(tmp_path, model="IP-Adapter", scale=0.5))
    assert status == OK and detail.startswith("complete:") and "scale 0.5" in detail
    # an encoder named with a "/" lies from the folder's root (diffusers' rule)
    status, detail = _ip_adapter(_config(tmp_path, model="IP-Adapter", image_encoder="models/image_encoder"))
    assert status == FAIL and str(folder / "models" / "image_encoder" / "config.json") in detail
