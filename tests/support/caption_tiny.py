"""Tiny caption models built offline for the tests: a WD14 stand-in (``onnx.helper``) whose scores
are known in advance, a random-weight BLIP (a small ``BlipConfig`` + a BERT tokenizer from a
handful of words) and a random-weight Florence-2 (a small ``Florence2Config`` + a byte-level BART
tokenizer spelling a handful of words), all saved the way users' downloaded folders are laid out."""

from __future__ import annotations

import math
from pathlib import Path

WD14_SIZE = 32


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# name, category, bias probability, weight on the B, G, R channel means (0..1) of the input
WD14_TAGS: list[tuple[str, int, float, tuple[float, float, float]]] = [
    ("long_hair", 0, 0.90, (0, 0, 0)),
    ("simple_background", 0, 0.50, (0, 0, 0)),
    ("blue_sky", 0, 0.20, (0, 0, 0)),  # under general_threshold 0.35
    ("hatsune_miku", 4, 0.90, (0, 0, 0)),  # over character_threshold 0.85
    ("some_character", 4, 0.60, (0, 0, 0)),  # over 0.35 but under 0.85: a character, not written
    ("general", 9, 0.95, (0, 0, 0)),  # a rating: never written
    ("^_^", 0, 0.70, (0, 0, 0)),  # a kaomoji keeps its underscore
    ("red_dominant", 0, 0.018, (0, 0, 8.0)),  # ~0.98 when the R channel (last in BGR) is full
    ("blue_dominant", 0, 0.018, (8.0, 0, 0)),  # ~0.98 when the B channel (first in BGR) is full
]


def build_wd14(folder: Path, size: int = WD14_SIZE) -> Path:
    """``model.onnx``: sigmoid(mean over H, W of the input / 255 @ W + b); ``selected_tags.csv``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    n = len(WD14_TAGS)
    weights = np.array([t[3] for t in WD14_TAGS], dtype=np.float32).T / 255.0  # [3, n]
    bias = np.array([_logit(t[2]) for t in WD14_TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input_1:0", "axes"], ["mean"], keepdims=0),
         helper.make_node("MatMul", ["mean", "W"], ["logits0"]),
         helper.make_node("Add", ["logits0", "b"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"])],
        "wd14_standin",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", n])],
        initializer=[numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
                     numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    rows = ["tag_id,name,category,count"] + [f"{i},{name},{cat},{1000 - i}" for i, (name, cat, _p, _w)
                                              in enumerate(WD14_TAGS)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


BLIP_WORDS = ["a", "photo", "of", "cat", "dog", "sky", "tree", "red", "blue", "house", "woman", "man",
              "standing", "sitting", "near", "the", "in", "on", "with", "field", "river", "mountain"]


def build_blip(folder: Path, seed: int = 0) -> Path:
    """A random-weight BLIP (hidden size 32, one layer) with its BlipProcessor, saved offline."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = special + BLIP_WORDS
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = BlipConfig(
        text_config={**small, "vocab_size": len(vocab), "pad_token_id": 0, "bos_token_id": 5,
                     "eos_token_id": 3, "sep_token_id": 3, "max_position_embeddings": 64},
        vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    model.save_pretrained(folder)
    return folder


# The words the tiny Florence-2 may say. Its BART tokenizer is byte-level BPE as the real one: every
# byte is a token (so any prompt encodes) and each word is built by merges ("Ġ"+"c" -> "Ġc", ... ->
# "Ġcat"); its generation config suppresses every token but these words and the special ones, so
# whatever the random weights say decodes to words of this list.
FLORENCE_WORDS = ["a", "photo", "of", "cat", "dog", "sky", "tree", "red", "blue", "house", "woman", "standing",
                  "near", "the", "in", "field", "river", "mountain"]
FLORENCE_SIZE = 32  # pixels; the vision tower's strides 4 and 2 leave a 4x4 grid: 16 + 1 image tokens


def build_florence2(folder: Path, seed: int = 0) -> Path:
    """A random-weight Florence-2 (a two-stage DaViT of widths 16/32, a one-layer BART of width 32)
    with its ``Florence2Processor`` (CLIP image processor, BART tokenizer from the ``vocab.json`` and
    ``merges.txt`` written here), saved as the transformers-native conversions are laid out."""
    import json

    import torch
    from transformers import (
        BartTokenizer,
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}  # BART's ids 0..3
    for char in bytes_to_unicode().values():
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    words = []
    for word in FLORENCE_WORDS:
        piece = "Ġ"  # byte-level BPE's space
        for char in word:
            if (piece, char) not in merges:
                merges.append((piece, char))
            piece += char
            vocab.setdefault(piece, len(vocab))
        words.append(vocab[piece])
    for token in ("<mask>", "<image>"):
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    tokenizer = BartTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                              extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(
        size={"height": FLORENCE_SIZE, "width": FLORENCE_SIZE}, do_center_crop=False,
        crop_size={"height": FLORENCE_SIZE, "width": FLORENCE_SIZE},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])  # Florence-2's (ImageNet's)
    image_processor.image_seq_length = (FLORENCE_SIZE // 8) ** 2 + 1  # the grid, then its mean
    Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                       post_processor_config={"pure_text": {}}).save_pretrained(folder)
    vision = {"depths": [1, 1], "patch_size": [7, 3], "patch_stride": [4, 2], "patch_padding": [3, 1],
              "patch_prenorm": [False, True], "embed_dim": [16, 32], "num_heads": [1, 2], "num_groups": [1, 2],
              "window_size": 2, "drop_path_rate": 0.0, "projection_dim": 32, "max_position_embeddings": 8,
              "max_temporal_embeddings": 4}
    text = {"vocab_size": len(tokenizer), "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 37,
            "decoder_ffn_dim": 37, "max_position_embeddings": 128, "pad_token_id": 1, "bos_token_id": 0,
            "eos_token_id": 2, "decoder_start_token_id": 2, "forced_eos_token_id": 2}
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id)
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config)
    allowed = {*words, vocab["<s>"], vocab["<pad>"], vocab["</s>"]}
    model.generation_config.suppress_tokens = [i for i in range(len(tokenizer)) if i not in allowed]
    model.save_pretrained(folder)
    return folder
