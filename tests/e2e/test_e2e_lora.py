"""LoRAs end to end: the daemon on the tiny SDXL with per-user LoRA files (two users each get
their own, a third the base, a broken file fails only its job), a redo that changes the weights,
start-up errors for the configured list, and the WebUI path against the loopback stand-in."""

from __future__ import annotations

import json
import os

import pytest
from harness import inbox_images, run_cli, theme_bytes, wait_until, write_config
from PIL import Image
from webui_server import FakeWebUI

from astrowatch.backends.infotext import parse_infotext
from astrowatch.backends.loras import file_hashes

pytestmark = [pytest.mark.slow]

PER_USER = {"path": "datasets/{user}/lora/{user}.safetensors", "weight": 0.9, "trigger": "ohwx {user}"}


def _sdxl_config(tmp_path, base, loras):
    return write_config(tmp_path, astro={"backend": "sdxl", "init_image": "none"},
                        sdxl={"model": str(base), "device": "cpu", "dtype": "float32", "width": 64,
                              "height": 64, "steps": 2, "scheduler": "euler", "loras": loras})


def _drop(data, user):
    folder = data / "Utilisateurs" / user
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"theme_{user}.json").write_bytes(theme_bytes(user=user))


def _result(data, user, exclude=()):
    found = [i for i in inbox_images(data, user) if i not in exclude]
    if not found:
        return None
    sidecar = found[0].with_suffix(".json")
    return (found[0], json.loads(sidecar.read_text())) if sidecar.exists() else None


def _redo(data, image, sidecar, loras):
    sidecar["params"]["loras"] = loras
    image.with_suffix(".json").write_text(json.dumps(sidecar))
    os.rename(image, data / "redo" / image.name)
    return wait_until(lambda: _result(data, sidecar["user"], exclude=(image,)), timeout=120, what="redo result")


def _pixels(path):
    with Image.open(path) as img:
        return img.convert("RGB").tobytes()


@pytest.mark.sdxl
def test_each_user_gets_their_own_lora_a_third_the_base_a_broken_one_fails_alone(
        tmp_path, daemon_factory, tiny_sdxl):
    pytest.importorskip("peft")
    from lora_tiny import make_sdxl_lora

    data = tmp_path / "data"
    for i, user in enumerate(("gaby", "lou")):
        make_sdxl_lora(data / "datasets" / user / "lora" / f"{user}.safetensors", seed=11 + 10 * i)
    broken = data / "datasets" / "zoe" / "lora" / "zoe.safetensors"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x00" * 40)
    d = daemon_factory(_sdxl_config(tmp_path, tiny_sdxl[0], [PER_USER])).start()
    for user in ("gaby", "lou", "max", "zoe"):
        _drop(data, user)
    results = {u: wait_until(lambda u=u: _result(data, u), timeout=180, what=u) for u in ("gaby", "lou", "max")}
    for user in ("gaby", "lou"):
        image, sidecar = results[user]
        lora_file = data / "datasets" / user / "lora" / f"{user}.safetensors"
        sha, short = file_hashes(lora_file)
        assert sidecar["loras"]["applied"] == [
            {"name": user, "weight": 0.9, "sha256": sha, "hash": short, "refiner": False,
             "path": f"datasets/{user}/lora/{user}.safetensors", "trigger": f"ohwx {user}"}]
        assert sidecar["prompt"].startswith(f"ohwx {user}, ")
        with Image.open(image) as img:
            info = parse_infotext(img.text["parameters"])
        assert info["prompt"].endswith(f"<lora:{user}:0.9>") and info["Lora hashes"] == f"{user}: {short}"
    _, max_sidecar = results["max"]
    assert max_sidecar["loras"] == {"applied": [], "skipped": [
        {"name": "max", "path": "datasets/max/lora/max.safetensors", "reason": "no such file"}]}
    assert "<lora:" not in max_sidecar["prompt"] and "ohwx" not in max_sidecar["prompt"]

    error = wait_until(lambda: next((data / "failed" / "zoe").glob("*.error.json"), None), timeout=60)
    reason = json.loads(error.read_text())["reason"]
    assert "zoe.safetensors" in reason and "not a .safetensors file" in reason and "remove the file" in reason

    # A redo at weight 0 is the base model: bit for bit the same as a redo without any LoRA
    image, sidecar = results["gaby"]
    with_lora = _pixels(image)
    zero_image, zero = _redo(data, image, sidecar, [{"name": "gaby", "weight": 0}])
    assert zero["loras"]["applied"][0]["weight"] == 0 and zero["params"]["loras"] == [{"name": "gaby", "weight": 0}]
    at_zero = _pixels(zero_image)
    none_image, none = _redo(data, zero_image, zero, [])
    assert none["loras"]["applied"] == [] and _pixels(none_image) == at_zero
    assert _pixels(none_image) != with_lora
    assert d.stop() == 0  # the daemon stayed up through zoe's failure


@pytest.mark.sdxl
def test_a_missing_configured_lora_stops_the_start_with_exit_78(tmp_path, tiny_sdxl):
    cfg = _sdxl_config(tmp_path, tiny_sdxl[0], [{"path": "loras/ink.safetensors"}])
    proc = run_cli("run", config=cfg, check=False)
    assert proc.returncode == 78
    assert "sdxl.loras:" in proc.stderr and "ink.safetensors does not exist" in proc.stderr


@pytest.fixture
def webui():
    server = FakeWebUI(loras=("ink", "gaby"))
    server.start()
    yield server
    server.down()


def _sdapi_config(tmp_path, webui, loras):
    return write_config(tmp_path, astro={"backend": "sdapi"},
                        sdapi={"url": webui.url, "width": 64, "height": 64, "steps": 4, "loras": loras})


def test_webui_gets_lora_tags_and_a_user_lora_it_lacks_is_skipped(tmp_path, daemon_factory, webui):
    d = daemon_factory(_sdapi_config(tmp_path, webui, [{"name": "ink", "weight": 0.7}, {"name": "{user}"}])).start()
    for user in ("gaby", "lou"):
        _drop(d.data, user)
    gaby = wait_until(lambda: _result(d.data, "gaby"), timeout=60)[1]
    lou = wait_until(lambda: _result(d.data, "lou"), timeout=60)[1]
    prompts = {b["prompt"] for b in webui.api.bodies}
    assert any(p.endswith(" <lora:ink:0.7> <lora:gaby:1>") for p in prompts)
    assert any(p.endswith(" <lora:ink:0.7>") for p in prompts)
    assert [u["name"] for u in gaby["loras"]["applied"]] == ["ink", "gaby"]
    assert lou["loras"]["skipped"] == [{"name": "lou", "reason": "the WebUI lists no LoRA of that name"}]
    with Image.open(inbox_images(d.data, "gaby")[0]) as img:
        assert "Lora hashes" in parse_infotext(img.text["parameters"])  # the WebUI's own infotext
    assert d.stop() == 0


def test_webui_without_a_configured_lora_is_a_config_error_at_start(tmp_path, webui):
    proc = run_cli("run", config=_sdapi_config(tmp_path, webui, [{"name": "watercolor"}]), check=False)
    assert proc.returncode == 78 and "the WebUI has no LoRA named 'watercolor'" in proc.stderr
