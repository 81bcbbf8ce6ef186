"""LoRA planning without a model: which adapters a job uses, their hashes, the config and job errors,
and trigger words inside prompt fusion's token budget.  LoRA files here are real safetensors
written with ``safetensors.numpy`` (the torch-free writer); the tiny-SDXL tests load real ones."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from harness import theme_bytes
from safetensors.numpy import save_file

from astrowatch.backends.loras import file_hashes, plan_files, plan_names
from astrowatch.core.errors import ConfigError, InputError
from astrowatch.runtime.settings import config_from_mapping

LORA_TENSORS = {"unet.mid_block.attn.to_q.lora_A.weight": np.ones((4, 8), np.float32),
                "unet.mid_block.attn.to_q.lora_B.weight": np.full((8, 4), 0.5, np.float32)}


def lora_file(path: Path, scale: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v * scale for k, v in LORA_TENSORS.items()}, str(path), metadata={"ss_output_name": path.stem})
    return path


def a1111_addnet_hash(path: Path) -> str:
    """kohya / A1111 ``addnet_hash_safetensors``: sha256 of everything after the JSON header."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return hashlib.sha256(raw[8 + n:]).hexdigest()


def entries(data: Path, *items: dict) -> list:
    cfg = config_from_mapping({"data_dir": str(data), "sdxl": {"loras": list(items)}}, base_dir=data)
    return cfg.sdxl.loras


@pytest.fixture
def data(tmp_path: Path) -> Path:
    lora_file(tmp_path / "loras" / "ink.safetensors")
    lora_file(tmp_path / "datasets" / "gaby" / "lora" / "gaby.safetensors", scale=2.0)
    return tmp_path


GLOBAL = {"path": "loras/ink.safetensors", "weight": 0.6}
PER_USER = {"path": "datasets/{user}/lora/{user}.safetensors", "weight": 0.9, "trigger": "ohwx {user}"}


def test_hashes_are_the_file_sha256_and_a1111s_12_hex_addnet_hash(data):
    path = data / "loras" / "ink.safetensors"
    sha, short = file_hashes(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert short == a1111_addnet_hash(path)[:12]
    # the addnet hash ignores the header: new metadata, same tensors, same short hash
    save_file(LORA_TENSORS, str(data / "renamed.safetensors"), metadata={"ss_output_name": "other"})
    assert file_hashes(data / "renamed.safetensors")[1] == short


def test_per_user_entry_applies_only_where_the_file_exists(data):
    gaby = plan_files(entries(data, GLOBAL, PER_USER), "gaby", data)
    assert [(u.name, u.weight, u.trigger) for u in gaby.uses] == [("ink", 0.6, ""), ("gaby", 0.9, "ohwx gaby")]
    assert gaby.skipped == []
    lou = plan_files(entries(data, GLOBAL, PER_USER), "lou", data)
    assert [u.name for u in lou.uses] == ["ink"]
    assert lou.skipped == [{"name": "lou", "path": "datasets/lou/lora/lou.safetensors", "reason": "no such file"}]
    record = gaby.record(data)
    assert record["applied"][1]["sha256"] == file_hashes(data / "datasets/gaby/lora/gaby.safetensors")[0]
    assert record["applied"][1]["path"] == "datasets/gaby/lora/gaby.safetensors"


def test_tags_and_the_lora_hashes_field_read_back_as_a1111_reads_them(data):
    plan = plan_files(entries(data, GLOBAL, PER_USER), "gaby", data)
    prompt = plan.prompt_with_tags("a lion, gold")
    assert prompt == "a lion, gold <lora:ink:0.6> <lora:gaby:0.9>"
    # A1111's lora_script.infotext_pasted: split "Lora hashes" on ",", then on the first ":"
    pairs = dict(x.strip().split(":", 1) for x in plan.hashes_field().split(","))
    hashes = {k.strip(): v.strip() for k, v in pairs.items()}
    assert set(re.findall(r"<lora:([^:]+):", prompt)) == set(hashes)
    assert hashes["gaby"] == a1111_addnet_hash(data / "datasets/gaby/lora/gaby.safetensors")[:12]


def test_a_redo_may_reweight_remove_and_add(data):
    lora_file(data / "datasets" / "gaby" / "extra.safetensors", scale=3.0)
    both = entries(data, GLOBAL, PER_USER)
    plan = plan_files(both, "gaby", data, [{"name": "gaby", "weight": 0.3},
                                           {"path": "datasets/{user}/extra.safetensors", "weight": "0.5"}])
    assert [(u.name, u.weight) for u in plan.uses] == [("gaby", 0.3), ("extra", 0.5)]
    assert plan.params() == [{"name": "gaby", "weight": 0.3}, {"name": "extra", "weight": 0.5}]
    assert plan_files(both, "gaby", data, []).uses == []  # all removed: the base model


@pytest.mark.parametrize("override, message", [
    ([{"name": "gaby", "weight": "strong"}], "the weight of 'gaby' is 'strong', not a number"),
    ([{"name": "nope"}], "no LoRA named 'nope'"),
    ([{"path": "../../etc/x.safetensors"}], "leads outside the data folder"),
    ([{"path": "datasets/gaby/x.ckpt"}], "not a .safetensors file"),
    ([{"path": "datasets/gaby/nothere.safetensors"}], "datasets/gaby/nothere.safetensors does not exist"),
    ([{"name": "gaby", "scale": 1}], "unknown key"),
    ({"gaby": 1}, "expected a list"),
])
def test_bad_job_loras_are_input_errors_that_say_what_to_fix(data, override, message):
    with pytest.raises(InputError, match=re.escape(message)):
        plan_files(entries(data, GLOBAL, PER_USER), "gaby", data, override)


def test_a_missing_global_file_is_a_config_error_naming_it(data):
    with pytest.raises(ConfigError, match=r"sdxl.loras: .*missing.safetensors does not exist") as err:
        plan_files(entries(data, {"path": "loras/missing.safetensors"}), "gaby", data)
    assert "relative paths are under data_dir" in str(err.value)


@pytest.mark.parametrize("content, message", [
    (b"\x00" * 5, "bad header length"),
    (b"garbage!" + b"x" * 64, "bad header length"),
    ((12).to_bytes(8, "little") + b"not json at" + b"\x00" * 8, "header is not JSON"),
])
def test_corrupt_files_are_refused_naming_the_file(data, content, message):
    bad = data / "datasets" / "gaby" / "lora" / "gaby.safetensors"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(message)) as err:  # per user: the job fails, not the daemon
        plan_files(entries(data, PER_USER), "gaby", data)
    assert str(bad) in str(err.value)
    (data / "loras" / "ink.safetensors").write_bytes(content)
    with pytest.raises(ConfigError, match="sdxl.loras: "):  # global: a config error (exit 78 at start)
        plan_files(entries(data, GLOBAL), "gaby", data)


def test_a_safetensors_without_lora_weights_is_refused(data):
    save_file({"model.diffusion_model.conv_in.weight": np.zeros((2, 2), np.float32)},
              str(data / "loras" / "ink.safetensors"))
    with pytest.raises(ConfigError, match="holds no LoRA weights"):
        plan_files(entries(data, GLOBAL), "gaby", data)


@pytest.mark.parametrize("entry, message", [
    ({"path": "loras/ink.ckpt"}, "not a .safetensors file"),
    ({"path": "loras/ink.safetensors", "weight": "heavy"}, "sdxl.loras.0.weight"),
    ({"path": "loras/ink.safetensors", "name": "a:b"}, "sdxl.loras.0.name"),
    ({"path": "loras/ink.safetensors", "strength": 1}, "sdxl.loras.0.strength: unknown key"),
])
def test_config_entries_are_validated(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_mapping({"sdxl": {"loras": [entry]}}, base_dir=tmp_path)


def test_webui_names_missing_global_is_a_config_error_user_one_is_skipped():
    cfg = config_from_mapping({"sdapi": {"loras": [{"name": "ink", "weight": 0.5}, {"name": "{user}"}]}},
                              base_dir=Path("."))
    plan = plan_names(cfg.sdapi.loras, "lou", {"ink", "gaby"})
    assert plan.tags() == "<lora:ink:0.5>" and plan.skipped[0]["name"] == "lou"
    assert plan_names(cfg.sdapi.loras, "gaby", {"ink", "gaby"}).tags() == "<lora:ink:0.5> <lora:gaby:1>"
    with pytest.raises(ConfigError, match="the WebUI has no LoRA named 'ink'"):
        plan_names(cfg.sdapi.loras, "gaby", {"gaby"})
    redo = plan_names(cfg.sdapi.loras, "lou", {"ink"}, [{"name": "ink", "weight": 0.2}, {"name": "lou"}])
    assert redo.tags() == "<lora:ink:0.2>" and redo.skipped[0]["name"] == "lou"  # configured per user: skipped
    with pytest.raises(InputError, match="the WebUI has no LoRA named 'inc' .it lists: ink"):
        plan_names(cfg.sdapi.loras, "lou", {"ink"}, [{"name": "inc"}])


def test_trigger_words_come_first_and_the_prompt_still_fits_the_budget():
    from astrowatch.chart.parse import parse_chart_bytes
    from astrowatch.fusion import fuse

    cfg = config_from_mapping({}, base_dir=Path("."))
    chart = parse_chart_bytes(theme_bytes("kerykeion_v6_subject.json"), user="gaby", source="theme_gaby.json",
                              max_bytes=2_000_000, max_depth=64)
    plain = fuse(chart, cfg, backend="sdxl")
    trigger = "ohwx gaby person, portrait of gaby, freckles, red curly hair, green eyes"
    with_trigger = fuse(chart, cfg, backend="sdxl", triggers=[trigger])
    assert with_trigger.prompt.startswith(trigger)
    for name, tokens in with_trigger.tokens.items():
        assert tokens["count"] <= tokens["budget"] == 75, name
    assert len(with_trigger.tokens[next(iter(with_trigger.tokens))]["dropped"]) >= \
        len(plain.tokens[next(iter(plain.tokens))]["dropped"])
