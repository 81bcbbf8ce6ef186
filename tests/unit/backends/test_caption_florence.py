"""The florence2 captioner on a tiny Florence-2 built offline (``caption_tiny.build_florence2``):
loaded from its folder, asked the configured task, answering in the tiny vocabulary; a folder that
lacks a file is refused naming the folder and the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from caption_tiny import FLORENCE_WORDS
from PIL import Image

from astrowatch.backends.caption.service import CaptionService
from astrowatch.backends.caption.text import effective_settings
from astrowatch.core.errors import ConfigError
from astrowatch.runtime.settings import config_from_mapping

pytestmark = pytest.mark.torch  # tiny BLIP / Florence-2 models: make test, not make test-fast

# what Florence2Processor puts in front of the image for each task (the model is asked the question)
QUESTIONS = {"<CAPTION>": "What does the image describe?",
             "<DETAILED_CAPTION>": "Describe in detail what is shown in the image.",
             "<MORE_DETAILED_CAPTION>": "Describe with a paragraph what is shown in the image."}


class Asked:
    """Wraps the loaded processor and keeps the text each call encoded (what the model was asked)."""

    def __init__(self, processor: Any) -> None:
        self.processor, self.questions = processor, []

    def __call__(self, **kw: Any) -> Any:
        inputs = self.processor(**kw)
        self.questions.append(self.processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True))
        return inputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.processor, name)


def _config(tmp_path: Path, folder: Path, **caption: Any) -> Any:
    return config_from_mapping({"caption": {"captioner": "florence2", "captioner_model": str(folder),
                                            "device": "cpu", "max_new_tokens": 12, **caption}}, base_dir=tmp_path)


def test_tiny_florence2_answers_the_configured_task_in_its_vocabulary(tiny_florence2: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, tiny_florence2, captioner_prompt="<DETAILED_CAPTION>")
    service = CaptionService(config, device="cpu")
    service.start()  # folder checked, model loaded once
    model = service.captioner("florence2", str(tiny_florence2))
    assert type(model.model).__name__ == "Florence2ForConditionalGeneration"
    assert type(model.processor).__name__ == "Florence2Processor"
    model.processor = asked = Asked(model.processor)
    photo = Image.new("RGBA", (50, 40), (200, 30, 60, 255))
    for params, task in [({}, "<DETAILED_CAPTION>"), ({"captioner_prompt": "<CAPTION>"}, "<CAPTION>"),
                         ({"captioner_prompt": "<MORE_DETAILED_CAPTION>"}, "<MORE_DETAILED_CAPTION>")]:
        settings = effective_settings(config, "lanczos", params)
        assert settings.captioner_prompt == task
        text = service.caption(photo, settings)
        assert asked.questions[-1] == QUESTIONS[task]
        assert text and set(text.split()) <= set(FLORENCE_WORDS), text
        assert "<" not in text and text == text.strip()
    assert service.captioner("florence2", str(tiny_florence2)) is model  # loaded once, kept
    info = service.model_info(effective_settings(config, "lanczos", {}))
    assert info["name"] == "florence2" and info["folder"] == str(tiny_florence2) and len(info["sha256"]) == 64
    service.close()


def test_a_processor_without_its_post_processing_rules_still_captions(tiny_florence2: Path, tmp_path: Path) -> None:
    from astrowatch.backends.caption.local import FlorenceCaptioner

    folder = tmp_path / "florence2"
    shutil.copytree(tiny_florence2, folder)
    saved = json.loads((folder / "processor_config.json").read_text())
    saved["post_processor_config"] = None  # Florence2Processor's default: post_process_generation refuses
    (folder / "processor_config.json").write_text(json.dumps(saved))
    text = FlorenceCaptioner(str(folder), "cpu", 8).caption(Image.new("RGB", (20, 30), (0, 90, 200)), "<CAPTION>")
    assert text and set(text.split()) <= set(FLORENCE_WORDS)


@pytest.mark.parametrize(("removed", "named"), [
    (["model.safetensors"], "model.safetensors or model.safetensors.index.json or pytorch_model.bin"),
    (["processor_config.json"], "preprocessor_config.json or processor_config.json"),
    (["tokenizer.json", "vocab.json"], "tokenizer.json or vocab.json"),
    (["config.json"], "config.json"),
])
def test_florence2_folder_missing_a_file_is_named(tiny_florence2: Path, tmp_path: Path, removed: list[str],
                                                  named: str) -> None:
    from astrowatch.backends.caption.local import FlorenceCaptioner

    broken = tmp_path / "florence2"
    shutil.copytree(tiny_florence2, broken)
    for name in removed:
        (broken / name).unlink()
    message = f"caption.captioner_model: {broken} has no {named}"
    with pytest.raises(ConfigError) as raised:
        FlorenceCaptioner(str(broken), "cpu", 8)
    assert str(raised.value) == message
    with pytest.raises(ConfigError) as at_start:  # astrowatch run's start-up check, before any load
        CaptionService(_config(tmp_path, broken), device="cpu").start()
    assert message in str(at_start.value)


def test_a_blip_folder_is_not_loaded_as_florence2(tiny_blip: Path) -> None:
    from astrowatch.backends.caption.local import FlorenceCaptioner

    with pytest.raises(ConfigError, match=f"{tiny_blip} cannot be loaded as florence2") as raised:
        FlorenceCaptioner(str(tiny_blip), "cpu", 8)
    assert "\n" not in str(raised.value)  # transformers' multi-line reason, on one line
