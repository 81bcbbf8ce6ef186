"""SdapiBackend against a real HTTP fake WebUI: routes, sizes, captions, txt2img, validation, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from sdapi_support import FakeWebUI, astro_task, enhance_task, make_backend, make_config, photo

from astrowatch.backends.infotext import parse_infotext
from astrowatch.backends.sdapi.backend import SdapiBackend
from astrowatch.core.errors import BackendError, ConfigError, PermanentBackendError

EXTRAS, IMG2IMG = "/sdapi/v1/extra-single-image", "/sdapi/v1/img2img"
TXT2IMG, INTERROGATE = "/sdapi/v1/txt2img", "/sdapi/v1/interrogate"


@pytest.fixture
def server():
    with FakeWebUI() as srv:
        yield srv


# -- the two upscale routes, exact sizes --------------------------------------------------------
@pytest.mark.parametrize(("scale", "expected"), [(2.0, (200, 160)), (1.5, (150, 120))])
def test_extras_route_gives_the_exact_size(server, tmp_path, scale, expected):
    backend = make_backend(server, tmp_path, enhance={"caption_model": "none"})
    result = backend.enhance(enhance_task(scale_factor=scale))
    assert result.image.size == expected and result.image.mode == "RGB"
    assert server.posts[EXTRAS] == 1 and server.posts[IMG2IMG] == 0
    body = server.requests_seen[0]
    assert (body["resize_mode"], body["upscaling_resize"], body["upscaler_1"]) == (0, scale, "R-ESRGAN 4x+")
    assert result.extra["route"] == "extra-single-image"
    assert result.model == "R-ESRGAN 4x+"
    assert result.params["scale_factor"] == scale and result.params["denoising_strength"] == 0.0
    # the WebUI rounds 150 down to 144 (multiple of 8): the backend resizes to the exact size
    assert ("size_fix" in result.extra) == (scale == 1.5)
    fields = parse_infotext(result.infotext)
    assert fields["Postprocess upscaler"] == "R-ESRGAN 4x+" and fields["Size"] == f"{expected[0]}x{expected[1]}"


def test_sd_upscale_route_with_prompt(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance={"caption_model": "none", "denoising_strength": 0.3,
                                                      "tile_size": 256, "tile_overlap": 32})
    result = backend.enhance(enhance_task(scale_factor=1.5))
    assert result.image.size == (150, 120)
    assert server.posts[IMG2IMG] == 1 and server.posts[EXTRAS] == 0
    body = server.requests_seen[0]
    assert body["script_name"] == "SD upscale"
    index = backend.upscalers.index("R-ESRGAN 4x+")
    assert body["script_args"] == ["", 32, index, 1.5]
    assert (body["width"], body["height"], body["denoising_strength"]) == (256, 256, 0.3)
    assert body["save_images"] is False and body["send_images"] is True
    assert body["prompt"] == "high quality, high resolution, detailed" and body["seed"] == 1234
    assert result.model == "sd_xl_base_1.0" and result.seed == 1234
    fields = parse_infotext(result.infotext)  # the WebUI's own infotext, kept
    assert fields["SD upscale upscaler"] == "R-ESRGAN 4x+" and fields["Denoising strength"] == "0.3"
    assert result.extra["route"] == "img2img+SD upscale"


def test_job_overrides_pick_the_route_and_upscaler(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance={"caption_model": "none"})
    result = backend.enhance(enhance_task(denoising_strength=0.25, upscaler="Lanczos", scale_factor=2))
    assert result.image.size == (200, 160)
    assert server.requests_seen[0]["script_args"][2] == backend.upscalers.index("Lanczos")
    with pytest.raises(PermanentBackendError, match="job parameters: scale_factor"):
        backend.enhance(enhance_task(scale_factor="big"))
    with pytest.raises(PermanentBackendError, match="available upscalers: None, Lanczos"):
        backend.enhance(enhance_task(upscaler="Magic 9x"))


# -- captions -------------------------------------------------------------------------------------
def test_clip_caption_with_trigger_word(server, tmp_path):
    backend = make_backend(server, tmp_path, dataset={"trigger_word": "astrw"}, astro={"language": "en"})
    result = backend.enhance(enhance_task())
    lines = result.description.splitlines()
    assert lines[0] == "astrw, a red abstract photograph with circles, highly detailed"
    assert any("200x160" in line for line in lines[1:])  # the technical facts follow
    assert server.posts[INTERROGATE] == 1
    assert server.requests_seen[-1]["model"] == "clip"
    assert result.extra["caption"] == "webui:clip"


def test_deepdanbooru_tags(server, tmp_path):
    backend = make_backend(server, tmp_path, dataset={"trigger_word": "astrw"},
                           enhance={"caption_model": "deepdanbooru"})
    result = backend.enhance(enhance_task(photo(colour=(128, 128, 128), mode="gray")))
    first = result.description.splitlines()[0]
    assert first.startswith("astrw, no_humans, abstract, circle")
    assert "monochrome" in first and "greyscale" in first


def test_interrogate_failure_falls_back_to_technical_description(tmp_path):
    with FakeWebUI(interrogators=("clip",)) as server:  # this WebUI has no deepdanbooru
        backend = make_backend(server, tmp_path, dataset={"trigger_word": "astrw"},
                               enhance={"caption_model": "deepdanbooru"}, astro={"language": "en"})
        result = backend.enhance(enhance_task())
        assert result.image.size == (200, 160)  # the upscale itself succeeded
        assert server.posts[INTERROGATE] == 1  # a 500 is not retried
    lines = result.description.splitlines()
    assert lines[0].startswith("astrw, photo, color, 200x160")
    assert "caption: WebUI interrogate unavailable, technical description only" in lines[-1]
    assert result.extra["caption"] == "technical"


def test_caption_model_none_skips_interrogate(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance={"caption_model": "none"})
    result = backend.enhance(enhance_task())
    assert server.posts[INTERROGATE] == 0
    assert result.description.splitlines()[0].startswith("photo, color, 200x160")
    assert "interrogate" not in result.description


# -- astro: txt2img ----------------------------------------------------------------------------------
def test_txt2img_generation(server, tmp_path):
    backend = make_backend(server, tmp_path, sdapi={"steps": 12, "sampler_name": "Euler a"})
    result = backend.generate(astro_task(seed=42))
    assert result.image.size == (128, 96)
    body = server.requests_seen[0]
    assert body["prompt"] == "(cosmic:1.2) wheel, [nebula], gold" and body["negative_prompt"] == "blurry, text"
    assert (body["seed"], body["steps"], body["sampler_name"], body["scheduler"]) == (42, 12, "Euler a", "Karras")
    assert "enable_hr" not in body
    assert result.model == "sd_xl_base_1.0" and result.seed == 42
    fields = parse_infotext(result.infotext)
    assert fields["Seed"] == "42" and fields["Sampler"] == "Euler a"
    again = backend.generate(astro_task(seed=42))
    assert again.image.tobytes() == result.image.tobytes()  # the fake draws from the seed


def test_txt2img_hires_fix(server, tmp_path):
    backend = make_backend(server, tmp_path, sdapi={"hires_fix": True})
    result = backend.generate(astro_task(hr_scale=1.5, steps=8))
    body = server.requests_seen[0]
    assert body["enable_hr"] is True and body["hr_scale"] == 1.5 and body["hr_upscaler"] == "Latent"
    assert body["steps"] == 8
    assert result.image.size == (192, 144)
    assert result.params["hires_fix"] is True and result.params["hr_scale"] == 1.5


# -- start-up validation, auth, server errors ------------------------------------------------------
def test_unknown_upscaler_at_startup_lists_what_is_available(server, tmp_path):
    backend = make_backend(server, tmp_path, start=False, enhance={"upscaler": "R-ESRGAN_4x+"})
    with pytest.raises(ConfigError) as err:
        backend.start()
    text = str(err.value)
    assert "enhance.upscaler: 'R-ESRGAN_4x+'" in text and "did you mean 'R-ESRGAN 4x+'" in text
    assert "Lanczos" in text and "SwinIR 4x" in text


def test_unknown_samplers_at_startup(server, tmp_path):
    backend = make_backend(server, tmp_path, start=False, sdapi={"sampler_name": "Nope"},
                           enhance={"sampler_name": "Euler b"})
    with pytest.raises(ConfigError) as err:
        backend.start()
    text = str(err.value)
    assert "sdapi.sampler_name: 'Nope'" in text and "enhance.sampler_name: 'Euler b'" in text
    assert "available samplers: DPM++ 2M" in text
    ok = make_backend(server, tmp_path, start=False, sdapi={"sampler_name": "DPM++ 2M Karras"})
    ok.start()  # pre-1.9 name "<sampler> <schedule>" is still accepted by the WebUI


def auth_file(tmp_path, text: str | None) -> str | None:
    if text is None:
        return None
    path = tmp_path / f"sdapi_auth_{len(list(tmp_path.glob('sdapi_auth_*')))}"
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def test_auth(tmp_path):
    with FakeWebUI(auth="alice:s3cret") as server:
        for auth in (None, "alice:wrong"):
            backend = make_backend(server, tmp_path, start=False, sdapi={"auth_file": auth_file(tmp_path, auth)})
            with pytest.raises(ConfigError, match="sdapi.auth_file"):
                backend.start()
        backend = make_backend(server, tmp_path, sdapi={"auth_file": auth_file(tmp_path, "alice:s3cret")})
        assert backend.enhance(enhance_task(caption_model="none")).image.size == (200, 160)
    with pytest.raises(ConfigError, match="user:pass"):
        make_backend(server, tmp_path, start=False, sdapi={"auth_file": auth_file(tmp_path, "no-colon")})


def test_auth_inline_in_the_config_is_refused_and_a_group_writable_auth_file_too(tmp_path):
    with pytest.raises(ConfigError, match=r"sdapi.auth: .*set sdapi.auth_file") as err:
        make_config("http://127.0.0.1:9", tmp_path, sdapi={"auth": "alice:s3cret"})
    assert "s3cret" not in str(err.value)
    with pytest.raises(ConfigError, match="credentials in sdapi.auth_file"):
        make_config("http://alice:s3cret@127.0.0.1:9", tmp_path)
    path = auth_file(tmp_path, "alice:s3cret")
    Path(path).chmod(0o620)
    with pytest.raises(ConfigError, match=r"writable by its group.*chmod 600"):
        SdapiBackend(make_config("http://127.0.0.1:9", tmp_path, sdapi={"auth_file": path}))


def test_422_detail_is_surfaced_and_not_retried(server, tmp_path):
    backend = make_backend(server, tmp_path)
    with pytest.raises(PermanentBackendError) as err:
        backend.client.post(EXTRAS, {"image": "", "upscaling_resize": "big", "resize_mode": 3})
    assert "422" in str(err.value)
    assert "body.upscaling_resize: value is not a valid float" in str(err.value)
    assert "body.resize_mode: unexpected value; permitted: 0, 1" in str(err.value)
    assert err.value.retryable is False
    assert server.posts[EXTRAS] == 1


def test_500_unknown_upscaler_is_permanent(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance={"caption_model": "none"})
    server.api.upscalers.remove("R-ESRGAN 4x+")  # removed from the WebUI after our start-up check
    with pytest.raises(PermanentBackendError, match="could not find upscaler named R-ESRGAN 4x"):
        backend.enhance(enhance_task())
    assert server.posts[EXTRAS] == 1  # not transient: not re-sent


def test_invalid_image_500_is_permanent(server, tmp_path):
    backend = make_backend(server, tmp_path)
    with pytest.raises(PermanentBackendError, match="Invalid encoded image"):
        backend.client.post(EXTRAS, {"image": "bm90IGFuIGltYWdl", "upscaler_1": "Lanczos"})
    assert server.posts[EXTRAS] == 1


def test_blank_result_is_an_error(server, tmp_path):
    backend = make_backend(server, tmp_path, enhance={"caption_model": "none"})
    flat = Image.new("RGB", (64, 64), (9, 9, 9))
    assert backend.enhance(enhance_task(flat)).image.size == (128, 128)  # blank in, blank out: fine
    server.api.blank = True  # the WebUI answers all-black images (NaN VAE...)
    with pytest.raises(BackendError, match="blank image") as err:
        backend.generate(astro_task())
    assert err.value.retryable is True
    with pytest.raises(BackendError, match="blank image"):
        backend.enhance(enhance_task(denoising_strength=0.3))


def test_describe(server, tmp_path):
    backend = make_backend(server, tmp_path)
    info = backend.describe()
    assert info == {"name": "sdapi", "url": server.url, "model": "sd_xl_base_1.0.safetensors [31e35c80fc]",
                    "reachable": True}


def test_a_webui_error_that_echoes_the_password_is_redacted(tmp_path):
    import requests

    from astrowatch.backends.sdapi.client import SdapiClient, server_detail

    SdapiClient(make_config("http://127.0.0.1:9", tmp_path,
                            sdapi={"auth_file": auth_file(tmp_path, "alice:echoed-Pa55word")}).sdapi)
    resp = requests.Response()
    resp.status_code, resp._content = 500, b'{"detail": "bad login alice:echoed-Pa55word"}'
    assert server_detail(resp) == "bad login [redacted]"  # the whole user:pass line, as read


def test_variants_are_one_txt2img_request_each_with_its_seed(server, tmp_path):
    """A WebUI batch draws image i with seed + i; variant seeds are derived by hash, so each variant is
    its own request with batch_size 1 and exactly its recorded seed."""
    from astrowatch.pipeline.variants import variant_seeds

    backend = make_backend(server, tmp_path)
    seeds = variant_seeds(42, 3)
    assert seeds[1] != seeds[0] + 1  # not A1111's seed + i
    results = backend.generate_variants(astro_task(seed=42), seeds)
    bodies = [b for b in server.requests_seen if "prompt" in b and "steps" in b]
    assert [(b["seed"], b["batch_size"], b["n_iter"]) for b in bodies] == [(s, 1, 1) for s in seeds]
    assert [r.seed for r in results] == seeds
    assert [parse_infotext(r.infotext)["Seed"] for r in results] == [str(s) for s in seeds]
    assert len({r.image.tobytes() for r in results}) == 3
    alone = backend.generate(astro_task(seed=seeds[2]))
    assert alone.image.tobytes() == results[2].image.tobytes()  # a variant is reproducible alone
