"""drain, generate, enhance and status, run as a user would run them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from harness import FIXTURES, ROOT, drop_theme, inbox_images, make_image, run_cli, wait_until, write_config
from PIL import Image

pytestmark = pytest.mark.slow


def test_drain_processes_inputs_and_decisions_then_exits(tmp_path):
    cfg = write_config(tmp_path)
    run_cli("init", str(tmp_path))
    user = drop_theme(tmp_path / "data", fixture="kerykeion_chart_data.json")
    make_image(user / "p.jpg")
    run_cli("drain", "--timeout", "60", config=cfg)
    images = inbox_images(tmp_path / "data")
    assert len(images) == 2
    for image in images:
        image.rename(tmp_path / "data" / "approved" / image.name)
    run_cli("drain", "--timeout", "60", config=cfg)
    assert (user / "theme_gaby.png").exists() and (tmp_path / "data" / "datasets" / "gaby" / "p.png").exists()
    status = json.loads(run_cli("status", "--json", config=cfg).stdout)
    assert status["counts"] == {"delivered": 1, "filed": 1} and not status["daemon"]["running"]


def test_generate_and_enhance_without_the_daemon(tmp_path):
    cfg = write_config(tmp_path)
    out = tmp_path / "wheel.png"
    proc = run_cli("generate", str(FIXTURES / "themes" / "kerykeion_v6_subject.json"), "-o", str(out),
                   "--seed", "7", "--set", "astro.wheel_size=300", config=cfg)
    assert f"wrote {out}" in proc.stdout and "seed 7" in proc.stdout
    with Image.open(out) as img:
        assert img.size == (300, 300)
    photo = tmp_path / "in.png"
    make_image(photo, (30, 20))
    big = tmp_path / "big.png"
    proc = run_cli("enhance", str(photo), "-o", str(big), "--set", "enhance.scale_factor=3",
                   "--set", "enhance.min_side=1", config=cfg)
    with Image.open(big) as img:
        assert img.size == (90, 60)
    assert "lanczos" in proc.stdout
    bad = run_cli("generate", str(photo), "-o", str(out), config=cfg, check=False)
    assert bad.returncode == 65 and bad.stderr.count("\n") == 1


def test_status_shows_the_running_daemon_and_its_backends(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, astro={"backend": "fake"})
    d = daemon_factory(cfg).start()
    drop_theme(d.data)
    image = wait_until(lambda: inbox_images(d.data), what="astro result")[0]
    sidecar = json.loads(image.with_suffix(".json").read_text())
    assert sidecar["prompt"] and sidecar["fusion"]["style"] == "figuratif"
    with Image.open(image) as img:  # our PNG chunk names the job, so a renamed file is recognised
        assert json.loads(img.text["astrowatch"])["job_id"] == sidecar["job_id"]
    out = wait_until(lambda: (o := run_cli("status", config=cfg).stdout) and "running" in o and o)
    assert "astro=fake" in out and "enhance=lanczos" in out and image.name in out
    gen = [json.loads(x) for x in (d.data / "logs" / "generations.jsonl").read_text().splitlines()]
    assert gen[0]["prompt"] == sidecar["prompt"] and gen[0]["status"] == "ok" and gen[0]["seed"] == sidecar["seed"]
    assert d.stop() == 0


def test_drain_timeout_exits_non_zero_with_work_pending(tmp_path):
    cfg = write_config(tmp_path, enhance={"backend": "fake"}, fake={"hang_seconds": 30})
    user = tmp_path / "data" / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    make_image(user / "slow.jpg")
    proc = run_cli("drain", "--timeout", "3", config=cfg, check=False)
    assert proc.returncode == 1 and "drain timeout expired" in proc.stderr


def readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index("```sh\n", text.index(after)) + 6:].split("```", 1)[0]


def test_the_readme_quick_start_block_works_pasted_at_once(tmp_path, daemon_factory):
    """`make run` (astrowatch init . + run on the shipped config.yaml, backend auto), then the
    README's "in another terminal" block pasted at once into bash."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(FIXTURES, tmp_path / "tests" / "fixtures")
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "sample-photo.jpg", tmp_path / "docs")
    run_cli("init", str(tmp_path))
    d = daemon_factory(tmp_path / "config.yaml").start()
    block = readme_block("Then, in\nanother terminal:")
    assert ".venv/bin/astrowatch status" in block
    block = block.replace(".venv/bin/astrowatch", f"{sys.executable} -m astrowatch")
    proc = subprocess.run(["bash", "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "cannot" not in proc.stderr and "No such file" not in proc.stderr, proc.stderr
    assert (d.data / "Utilisateurs" / "gaby" / "theme_gaby.png").is_file()
    assert (d.data / "datasets" / "gaby" / "photo.png").is_file() and (d.data / "datasets" / "gaby" / "photo.txt").is_file()
    assert "backends: astro=wheel, enhance=lanczos" in proc.stdout  # backend: auto on a machine with no GPU/WebUI
    assert d.stop() == 0


def test_backend_auto_resolution(tmp_path, daemon_factory):
    """auto: sdxl when sdxl.model is set and diffusers is there, else sdapi when a WebUI answers,
    else the CPU backends; the choice and the reason are logged."""
    from webui_server import FakeWebUI

    webui = FakeWebUI()
    webui.start()
    try:
        cfg = write_config(tmp_path, astro={"backend": "auto"}, enhance={"backend": "auto", "min_side": 16},
                           sdapi={"url": webui.url, "width": 64, "height": 64, "steps": 2})
        d = daemon_factory(cfg).start()
        status = json.loads(run_cli("status", "--json", config=cfg).stdout)
        assert status["daemon"]["backends"] == {"astro": "sdapi", "enhance": "sdapi"}
        drop_theme(d.data)
        image = wait_until(lambda: inbox_images(d.data), what="a result through the WebUI")[0]
        assert json.loads(image.with_suffix(".json").read_text())["backend"] == "sdapi"
        assert d.stop() == 0
    finally:
        webui.down()
    cfg = write_config(tmp_path, astro={"backend": "auto"}, enhance={"backend": "auto"},
                       sdapi={"url": webui.url, "connect_timeout": 0.5})  # the WebUI is gone now
    d = daemon_factory(cfg).start()
    status = json.loads(run_cli("status", "--json", config=cfg).stdout)
    assert status["daemon"]["backends"] == {"astro": "wheel", "enhance": "lanczos"}
    assert "auto" in d.log() and d.stop() == 0
