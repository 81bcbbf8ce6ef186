"""Local transformers captioners: BLIP (``BlipForConditionalGeneration``) and Florence-2
(``Florence2ForConditionalGeneration``, native in transformers 5), from a ``save_pretrained``
folder, offline (``local_files_only``), on the caption device; loaded once, kept across jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astrowatch.backends.caption.folders import folder_problem, weights_sha256
from astrowatch.backends.caption.text import DEFAULT_FLORENCE_TASK, clean_caption
from astrowatch.core.errors import ConfigError


def torch_device(setting: str, worker_device: str | None) -> str:
    """``auto``: the worker's GPU, else any GPU, else the CPU."""
    import torch

    if setting != "auto":
        if setting.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"caption.device {setting}: no CUDA device here", hint="set caption.device: cpu")
        return setting
    if worker_device and worker_device.startswith("cuda"):
        return worker_device
    return "cuda" if torch.cuda.is_available() else "cpu"


class LocalCaptioner:
    name = "local"

    def __init__(self, folder: str, device: str, max_new_tokens: int) -> None:
        problem = folder_problem(self.name, folder)
        if problem:
            raise ConfigError(problem)
        self.folder = Path(folder)
        self.device = device
        self.max_new_tokens = max_new_tokens
        try:
            import torch  # the extra [sdxl] brings torch and transformers
            import transformers  # the import error names what to install
        except ImportError:
            raise ConfigError(f"caption.captioner {self.name} needs torch and transformers",
                              hint="pip install 'astrowatch[sdxl]'") from None
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        try:
            self.processor, self.model = self._load(transformers)
        # OSError, ValueError... and huggingface_hub's StrictDataclassError, which transformers 5 raises
        # for the config.json of another model: each is a folder that cannot serve, reported as such
        except Exception as exc:
            raise ConfigError(f"caption.captioner_model: {self.folder} cannot be loaded as {self.name}: "
                              f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None  # one line
        self.model.to(device=device, dtype=self.dtype).eval()
        self.sha256 = weights_sha256(self.folder)

    def _load(self, transformers: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder), "sha256": self.sha256, "device": self.device}

    def _inputs(self, **kw: Any) -> Any:
        inputs = self.processor(return_tensors="pt", **kw).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def close(self) -> None:
        self.model = None


class BlipCaptioner(LocalCaptioner):
    """``processor(images, text=prefix)`` then ``model.generate``; the prefix conditions the caption."""

    name = "blip"

    def _load(self, transformers: Any) -> tuple[Any, Any]:
        processor = transformers.BlipProcessor.from_pretrained(self.folder, local_files_only=True)
        model = transformers.BlipForConditionalGeneration.from_pretrained(self.folder, local_files_only=True)
        return processor, model

    def caption(self, image: Any, prompt: str | None) -> str:
        import torch

        kw: dict[str, Any] = {"images": image.convert("RGB")}
        if prompt:
            kw["text"] = prompt
        inputs = self._inputs(**kw)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return clean_caption(self.processor.decode(out[0], skip_special_tokens=True))


class FlorenceCaptioner(LocalCaptioner):
    """The task token (``<CAPTION>``...) is the prompt; the answer goes through the processor's
    ``post_process_generation``."""

    name = "florence2"

    def _load(self, transformers: Any) -> tuple[Any, Any]:
        processor = transformers.AutoProcessor.from_pretrained(self.folder, local_files_only=True)
        model = transformers.Florence2ForConditionalGeneration.from_pretrained(self.folder, local_files_only=True)
        return processor, model

    def caption(self, image: Any, prompt: str | None) -> str:
        import torch

        task = prompt or DEFAULT_FLORENCE_TASK
        rgb = image.convert("RGB")
        inputs = self._inputs(text=task, images=rgb)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=3, do_sample=False)
        text = self.processor.batch_decode(out, skip_special_tokens=False)[0]
        try:
            parsed = self.processor.post_process_generation(text, task=task, image_size=rgb.size)
        except ValueError:  # a processor saved without its post_processor_config: the text is the answer
            parsed = None
        answer = parsed.get(task, text) if isinstance(parsed, dict) else text
        return clean_caption(str(answer).replace("</s>", " ").replace("<s>", " ").replace("<pad>", " "))
