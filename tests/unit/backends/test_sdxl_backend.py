"""SDXL backend on a tiny random SDXL (CPU, offline), loaded through the same code as a real model.

The session fixture saves a tiny base + refiner with ``save_pretrained``; every backend here is
started from those folders with ``SdxlBackend.start()`` (``from_pretrained(local_files_only)``).
Faults (black decode, CUDA OOM, interrupt) are injected with torch module hooks on the real
pipeline, never by mocking the backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from extras import require

os.environ["HF_HUB_OFFLINE"] = "1"
require("diffusers", "sdxl")
require("compel", "sdxl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from astrowatch.backends.base import AstroTask, EnhanceTask  # noqa: E402
from astrowatch.backends.infotext import parse_infotext  # noqa: E402
from astrowatch.backends.sdxl.backend import SdxlBackend  # noqa: E402
from astrowatch.core.config import Config  # noqa: E402
from astrowatch.core.errors import BackendError, ConfigError, InputError, Interrupted  # noqa: E402
from astrowatch.runtime.settings import config_from_mapping  # noqa: E402

pytestmark = [pytest.mark.sdxl, pytest.mark.torch]

PROMPT = "a natal chart as a stained glass window, gold, indigo, (sun in leo:1.2)"
NEGATIVE = "blurry, text"


def make_config(base: Path | str, **sdxl: Any) -> Config:
    settings = {"model": str(base), "device": "cpu", "steps": 4, "width": 64, "height": 64, **sdxl}
    return config_from_mapping({"sdxl": settings}, base_dir=Path("."))


def make_task(seed: int = 1, prompt: str = PROMPT, **params: Any) -> AstroTask:
    return AstroTask(job_id="job-1", user="alice", chart=None, params=params, seed=seed,  # type: ignore[arg-type]
                     prompt=prompt, negative_prompt=NEGATIVE)


def started(config: Config) -> SdxlBackend:
    backend = SdxlBackend(config)
    backend.start()
    return backend


@pytest.fixture(scope="module")
def base_backend(tiny_sdxl: tuple[Path, Path]) -> Iterator[SdxlBackend]:
    backend = started(make_config(tiny_sdxl[0]))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def refiner_backend(tiny_sdxl: tuple[Path, Path]) -> Iterator[SdxlBackend]:
    backend = started(make_config(tiny_sdxl[0], refiner=str(tiny_sdxl[1]), dtype="float32"))
    yield backend
    backend.close()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


class Hook:
    """A forward (pre-)hook on a real module that counts calls and may change what happens."""

    def __init__(self, module: torch.nn.Module, action: Any = None, *, pre: bool = False) -> None:
        self.calls = 0
        self.action = action
        register = module.register_forward_pre_hook if pre else module.register_forward_hook
        self.handle = register(self._pre if pre else self._post)

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        self.calls += 1
        if self.action is not None:
            self.action(self.calls)

    def _post(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.action(self.calls, output) if self.action is not None else output

    def __enter__(self) -> Hook:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


# -- generation ----------------------------------------------------------------------------------
def test_txt2img_size_not_blank_timings(base_backend: SdxlBackend) -> None:
    result = base_backend.generate(make_task())
    assert result.image.size == (64, 64) and result.image.mode == "RGB"
    assert pixels(result.image).std() > 1.0  # not a flat / black frame
    timings = result.extra["timings"]
    assert timings["steps"] == 4 and timings["steps_per_second"] > 0
    assert {"encode_seconds", "base_seconds", "decode_seconds", "load_seconds", "total_seconds"} <= set(timings)
    assert result.backend == "sdxl" and result.model == "base" and result.seed == 1
    assert base_backend.describe()["dtype"] == "float32"  # bfloat16 asked, forced on cpu


def test_seeded_determinism(base_backend: SdxlBackend) -> None:
    first = pixels(base_backend.generate(make_task(seed=42)).image)
    again = pixels(base_backend.generate(make_task(seed=42)).image)
    other = pixels(base_backend.generate(make_task(seed=43)).image)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_infotext_round_trip_with_a1111_regex(base_backend: SdxlBackend) -> None:
    result = base_backend.generate(make_task(seed=7, cfg_scale=5.5))
    parsed = parse_infotext(result.infotext or "")
    assert parsed["prompt"] == PROMPT and parsed["negative_prompt"] == NEGATIVE
    assert parsed["Steps"] == "4" and parsed["Sampler"] == "DPM++ 2M" and parsed["Schedule type"] == "Karras"
    assert parsed["CFG scale"] == "5.5" and parsed["Seed"] == "7" and parsed["Size"] == "64x64"
    assert parsed["Model"] == "base"


def test_long_prompt_is_not_truncated(base_backend: SdxlBackend) -> None:
    pipe = base_backend._pipes.base  # type: ignore[union-attr]
    prompt = " ".join(f"star{i % 10} house" for i in range(20))
    tokens = len(pipe.tokenizer(prompt).input_ids)
    assert tokens >= 150
    embeds = base_backend.encode(prompt, NEGATIVE)
    assert embeds.embeds.shape[1] > 77 and embeds.embeds.shape[1] >= tokens
    assert embeds.negative.shape == embeds.embeds.shape  # padded to the same length
    assert embeds.embeds.shape[2] == 64 and embeds.pooled.shape == (1, 32)  # both encoders, pooled from _2
    assert base_backend.generate(make_task(prompt=prompt)).image.size == (64, 64)


@pytest.mark.parametrize("scheduler", ["euler_a", "euler", "dpmpp_2m_sde_karras", "ddim"])
def test_every_scheduler_runs(base_backend: SdxlBackend, scheduler: str) -> None:
    result = base_backend.generate(make_task(scheduler=scheduler, steps=2))
    assert result.image.size == (64, 64) and result.params["scheduler"] == scheduler


def test_size_override_and_upscale_x2(base_backend: SdxlBackend) -> None:
    result = base_backend.generate(make_task(width=96, height=64, upscale="2"))
    assert result.image.size == (192, 128)
    parsed = parse_infotext(result.infotext or "")
    assert parsed["Size"] == "96x64" and parsed["Hires upscale"] == "2" and parsed["Hires upscaler"] == "Lanczos"
    assert result.extra["timings"]["upscale_seconds"] > 0
    assert not base_backend._pipes.base.vae.use_tiling  # type: ignore[union-attr]  # tiling only for the pass


def test_init_image_img2img(base_backend: SdxlBackend, tmp_path: Path) -> None:
    wheel = tmp_path / "wheel.png"
    Image.new("RGB", (100, 100), "navy").save(wheel)
    task = make_task(init_strength=0.5)
    task.init_image = wheel
    result = base_backend.generate(task)
    assert result.image.size == (64, 64) and result.params["init_strength"] == 0.5


def test_base_plus_refiner(refiner_backend: SdxlBackend) -> None:
    pipes = refiner_backend._pipes
    assert pipes is not None and pipes.refiner is not None
    assert pipes.refiner.text_encoder_2 is pipes.base.text_encoder_2 and pipes.refiner.vae is pipes.base.vae
    result = refiner_backend.generate(make_task(prompt=" ".join(["long prompt"] * 40)))
    assert result.image.size == (64, 64) and pixels(result.image).std() > 1.0
    timings = result.extra["timings"]
    assert timings["base_seconds"] > 0 and timings["refiner_seconds"] > 0 and timings["steps"] == 4
    parsed = parse_infotext(result.infotext or "")
    assert parsed["Refiner"] == "refiner" and parsed["Refiner switch at"] == "0.8"
    again = refiner_backend.generate(make_task(prompt=" ".join(["long prompt"] * 40)))
    assert np.array_equal(pixels(result.image), pixels(again.image))


def test_enhance_exact_size(base_backend: SdxlBackend) -> None:
    source = Image.linear_gradient("L").resize((50, 37)).convert("RGB")
    for scale, expected in ((2.0, (100, 74)), (1.5, (75, 56))):
        task = EnhanceTask(job_id="e", user="alice", image=source, source_name="photo.jpg",
                           params={"scale_factor": scale, "steps": 4}, seed=3)
        result = base_backend.enhance(task)
        assert result.image.size == expected
        assert result.extra["timings"]["steps"] == 1  # int(4 * 0.25) img2img steps ran
        assert result.description and result.params["strength"] == 0.25


# -- failures ------------------------------------------------------------------------------------
def test_black_image_retried_in_fp32_then_error(base_backend: SdxlBackend) -> None:
    conv_out = base_backend._pipes.base.vae.decoder.conv_out  # type: ignore[union-attr]
    with Hook(conv_out, lambda n, out: torch.full_like(out, -1.0)) as hook, \
            pytest.raises(BackendError, match="black image: every pixel is black"):
        base_backend.generate(make_task())
    assert hook.calls == 2  # the decode, then the float32 retry


def test_nan_decode_once_is_recovered(base_backend: SdxlBackend) -> None:
    conv_out = base_backend._pipes.base.vae.decoder.conv_out  # type: ignore[union-attr]
    nan_once = lambda n, out: torch.full_like(out, float("nan")) if n == 1 else out  # noqa: E731
    with Hook(conv_out, nan_once) as hook:
        result = base_backend.generate(make_task())
    assert hook.calls == 2 and result.extra["vae_fp32_retry"] is True
    assert pixels(result.image).std() > 1.0


def test_interrupt_stops_between_steps(base_backend: SdxlBackend) -> None:
    task = make_task()
    unet = base_backend._pipes.base.unet  # type: ignore[union-attr]
    with Hook(unet, lambda n: task.cancel.request_interrupt(), pre=True) as hook, \
            pytest.raises(Interrupted, match="after 1 step"):
        base_backend.generate(task)
    assert hook.calls == 1  # steps 2..4 were skipped
    task.cancel = type(task.cancel)()
    task.cancel.request_interrupt()
    with pytest.raises(Interrupted):
        base_backend.generate(task)  # already interrupted: nothing runs
    assert base_backend.generate(make_task()).image.size == (64, 64)  # the pipeline is usable again


def test_out_of_memory_retry_then_advice(tiny_sdxl: tuple[Path, Path]) -> None:
    backend = started(make_config(tiny_sdxl[0], dtype="float32"))
    unet = backend._pipes.base.unet  # type: ignore[union-attr]

    def oom(n: int) -> None:
        if n == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with Hook(unet, oom, pre=True):
        result = backend.generate(make_task())
    assert result.extra["oom_retry"] is True and backend.describe()["low_memory_fallback"] is True
    assert backend._pipes.base.vae.use_tiling  # type: ignore[union-attr]

    def always(n: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with Hook(unet, always, pre=True), pytest.raises(BackendError, match="out of memory") as err:
        backend.generate(make_task(width=1024, height=768))
    assert "sdxl.width: 728, sdxl.height: 544" in str(err.value) and "sdxl.cpu_offload: true" in str(err.value)
    backend.close()
    with pytest.raises(BackendError, match="not started"):
        backend.generate(make_task())


# -- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"scheduler": "dpm_fast"}, {"width": 100}, {"height": 8192}, {"width": 32}])
def test_bad_settings_are_config_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="sdxl"):
        make_config("/nowhere", **bad)


def test_bad_job_parameters_are_input_errors(base_backend: SdxlBackend) -> None:
    with pytest.raises(InputError, match="scheduler"):
        base_backend.generate(make_task(scheduler="plms"))
    with pytest.raises(InputError, match="width"):
        base_backend.generate(make_task(width=65))


def test_missing_or_unusable_model_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sdxl.model: .*does not exist"):
        started(make_config(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="must be downloaded first"):
        started(make_config("nobody-astrowatch/not-a-cached-model"))
    (tmp_path / "old.ckpt").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="pickle"):
        started(make_config(tmp_path / "old.ckpt"))
    with pytest.raises(ConfigError, match="sdxl.model is not set"):
        SdxlBackend(Config()).start()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            started(make_config(tmp_path, device="cuda:0"))
    with pytest.raises(ConfigError, match="not a device"):
        SdxlBackend(Config(), device="gpu0")


def test_hub_id_from_local_cache_and_vae_option(tiny_sdxl: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    repo = tmp_path / "hub" / "models--astro--tiny-sdxl"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots").mkdir()
    (repo / "snapshots" / ("0" * 40)).symlink_to(tiny_sdxl[0], target_is_directory=True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = started(make_config("astro/tiny-sdxl", vae=str(tiny_sdxl[0])))  # vae: a pipeline folder's
    assert backend.describe()["model"] == "tiny-sdxl"
    result = backend.generate(make_task())
    assert result.image.size == (64, 64) and parse_infotext(result.infotext or "")["VAE"] == "base"


def test_settings_key_only_changes_for_reload_keys(tiny_sdxl: tuple[Path, Path]) -> None:
    key = SdxlBackend(make_config(tiny_sdxl[0])).settings_key()
    for same in ({"steps": 30}, {"scheduler": "ddim"}, {"width": 1024}, {"cfg_scale": 3.0}, {"upscale": "2"},
                 {"refiner_switch": 0.7}, {"enhance_strength": 0.4}):
        assert SdxlBackend(make_config(tiny_sdxl[0], **same)).settings_key() == key, same
    for changed in ({"model": "/other"}, {"refiner": "/r"}, {"vae": "/v"}, {"dtype": "float16"},
                    {"device": "cuda:1"}, {"compile": True}, {"cpu_offload": True}):
        assert SdxlBackend(make_config(tiny_sdxl[0], **changed)).settings_key() != key, changed
    assert SdxlBackend(make_config(tiny_sdxl[0]), device="cuda:1").settings_key() != key


def test_from_pipeline_and_describe() -> None:
    from sdxl_tiny import build_tiny_pipelines

    base, refiner = build_tiny_pipelines()
    backend = SdxlBackend.from_pipeline(make_config("/in-memory"), base, refiner, model_name="tiny")
    assert backend.device == "cpu" and backend.load_seconds == 0.0
    backend.generate(make_task())
    backend.generate(make_task(seed=2))
    info = backend.describe()
    assert info["images"] == 2 and info["refiner"] == "tiny-refiner"
    assert info["mean_seconds_per_image"] > 0 and info["first_image_seconds"] > 0


def test_importing_base_and_cli_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, astrowatch.backends.base, astrowatch.cli; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers', 'compel') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
