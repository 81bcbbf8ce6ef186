"""Training captions for enhance results: a captioner (a sentence) and a tagger (tags with scores).

Nothing here imports torch, transformers or onnxruntime at import time: the model modules
(:mod:`.blip`, :mod:`.florence`, :mod:`.wd14`, :mod:`.chat`) are imported by
:class:`~astrowatch.backends.caption.service.CaptionService` when it loads a model, in the worker.
"""
