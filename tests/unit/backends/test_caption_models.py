"""The caption section, line 1's composition, the tiny offline BLIP and the openai captioner
against the loopback OpenAI server."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from astrowatch.backends.caption.text import Line, compose, effective_settings, tag_text
from astrowatch.core.errors import BackendError, ConfigError, CredentialsRejected
from astrowatch.runtime.settings import config_from_mapping


def cfg(tmp_path: Path, **caption: object) -> object:
    return config_from_mapping({"caption": caption}, base_dir=tmp_path)


def test_caption_section_is_validated_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"caption\.captioner_modle: unknown key"):
        cfg(tmp_path, captioner_modle="x")
    with pytest.raises(ConfigError, match="caption.captioner: Input should be"):
        cfg(tmp_path, captioner="llava")
    with pytest.raises(ConfigError, match="captioner_model: captioner blip needs a local model folder"):
        cfg(tmp_path, captioner="blip")
    with pytest.raises(ConfigError, match="tagger_model: tagger wd14 needs"):
        cfg(tmp_path, tagger="wd14")
    with pytest.raises(ConfigError, match="not a Florence-2 caption task"):
        cfg(tmp_path, captioner="florence2", captioner_model="m", captioner_prompt="describe")
    with pytest.raises(ConfigError, match="general_threshold"):
        cfg(tmp_path, general_threshold=1.5)
    with pytest.raises(ConfigError, match="caption.device"):
        cfg(tmp_path, device="gpu")
    c = cfg(tmp_path, captioner="blip", captioner_model="models/blip", tagger="wd14", tagger_model="models/wd")
    assert c.caption.captioner_model == str(tmp_path / "models" / "blip")  # type: ignore[attr-defined]
    assert c.caption.tagger_model == tmp_path / "models" / "wd"  # type: ignore[attr-defined]


def test_auto_and_job_overrides(tmp_path: Path) -> None:
    c = config_from_mapping({}, base_dir=tmp_path)
    assert effective_settings(c, "lanczos", {}).captioner == "none"
    webui = effective_settings(c, "sdapi", {})
    assert (webui.captioner, webui.captioner_model) == ("sdapi", "clip")  # enhance.caption_model still works
    c = config_from_mapping({"caption": {"captioner": "sdapi", "captioner_model": "deepdanbooru"}}, base_dir=tmp_path)
    assert effective_settings(c, "lanczos", {}).captioner_model == "deepdanbooru"
    s = effective_settings(c, "lanczos", {"captioner": "openai", "general_threshold": 0.5, "max_tags": 3})
    assert (s.captioner, s.captioner_model, s.general_threshold, s.max_tags) == ("openai", "gpt-4.1-mini", 0.5, 3)


def test_line_one_trigger_first_no_duplicates() -> None:
    assert Line("ohwx", "a woman in a field", ["long hair", "Ohwx", "smile", "smile"]).text() == \
        "ohwx, a woman in a field, long hair, smile"
    assert Line("", "", []).text() == ""
    assert Line("ohwx", "", ["smile"]).text() == "ohwx, smile"
    assert compose("ohwx, smile", "photo, color, 8x8\n\nsize: 8x8") == "ohwx, smile\nphoto, color, 8x8\nsize: 8x8"
    assert compose("", "photo, color\nsize") == "photo, color\nsize"  # nothing to say: the technical line
    assert (tag_text("long_hair", False), tag_text("^_^", False), tag_text("a_b", False)) == \
        ("long hair", "^_^", "a_b")


def test_tiny_blip_captions_from_its_vocabulary(tiny_blip: Path) -> None:
    from caption_tiny import BLIP_WORDS

    from astrowatch.backends.caption.local import BlipCaptioner

    blip = BlipCaptioner(str(tiny_blip), "cpu", 12)
    text = blip.caption(Image.new("RGB", (50, 40), (200, 30, 60)), None)
    assert text and set(text.split()) <= set(BLIP_WORDS)
    assert blip.caption(Image.new("RGB", (50, 40), (200, 30, 60)), "a photo of").startswith("a photo of")
    assert blip.info()["sha256"] and blip.info()["folder"] == str(tiny_blip)


def test_blip_folder_without_weights_is_named(tiny_blip: Path, tmp_path: Path) -> None:
    import shutil

    from astrowatch.backends.caption.local import BlipCaptioner

    broken = tmp_path / "blip"
    shutil.copytree(tiny_blip, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=f"{broken} has no model.safetensors"):
        BlipCaptioner(str(broken), "cpu", 12)


def test_openai_captioner_sends_a_data_url_and_retries(tmp_path: Path) -> None:
    from openai_server import FakeOpenAI

    from astrowatch.backends.caption.chat import ChatCaptioner

    with FakeOpenAI() as server:
        key = tmp_path / "key"
        key.write_text(server.api_key)
        key.chmod(0o600)
        c = config_from_mapping({"openai": {"base_url": server.base_url, "api_key_file": str(key),
                                            "retry_backoff": 0.01}}, base_dir=tmp_path)
        chat = ChatCaptioner(c, "gpt-4.1-mini")
        server.script("503")
        server.chat_answer = "A red square on a white table.\n"
        assert chat.caption(Image.new("RGB", (1500, 40), (255, 0, 0)), "Describe it.") == "A red square on a white table"
        body = server.chat_received[-1]["body"]
        assert body["model"] == "gpt-4.1-mini" and len(server.chat_received) == 2
        text, image = body["messages"][0]["content"]
        assert text == {"type": "text", "text": "Describe it."}
        url = image["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert max(sent.size) == 1024
        assert server.api_key not in str(body)
        server.chat_answer = "  "
        with pytest.raises(BackendError, match="empty caption"):
            chat.caption(Image.new("RGB", (8, 8)), None)
        chat.key = type(chat.key)("sk-wrong-0000000000000000", "test", "test")
        with pytest.raises(CredentialsRejected, match="rejected the API key"):
            chat.caption(Image.new("RGB", (8, 8)), None)
