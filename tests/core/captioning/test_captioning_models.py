"""The captioning model layer (``core.captioning``) with real, tiny, offline models.

Every family is built from configs into a temp folder (``tests/support/tiny_models.py``)
and loaded through :func:`core.captioning.load_captioner`, so these tests run
the same code path as a real checkpoint, without the network.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.captioning import (
    CaptionResult,
    GenerationSettings,
    ModelLoadError,
    load_captioner,
    resolve_device,
)
from core.captioning.captioner import sequence_scores
from core.captioning.device import default_dtype
from core.captioning.lm_head import RescoredInt8Head
from core.captioning.optimize import (
    SDPA_TOLERANCE,
    _sdpa_blip_attention_class,
    _verify_patch,
    plan_optimizations,
)
from tests.support import model_fixtures, tiny_models
from tests.support.model_fixtures import BUILDERS
from tests.support.paths import REPO_ROOT

# Session fixtures with the tiny models (tests/conftest.py stays model-free).
tiny_model_dirs = model_fixtures.tiny_model_dirs
tiny_blip_dir = model_fixtures.tiny_blip_dir
trained_blip_dir = model_fixtures.trained_blip_dir

REPO = REPO_ROOT

# peft 0.21's get_peft_model reads transformers' deprecated ``is_gradient_checkpointing``.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

#: family fixture name -> Captioner.identity["family"]
FAMILY_OF = {
    "blip": "blip",
    "blip2": "blip-2",
    "git": "git",
    "vision_encoder_decoder": "vision-encoder-decoder",
    "florence2": "florence2",
    "llava": "llava",
    "idefics3": "idefics3",
    "qwen2_vl": "qwen2-vl",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The tiny models gain nothing from intra-op threads; on a busy 2-core box
    OpenMP spin-waiting made this module 2x slower with 2 threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub access, even if conftest changes: env *and* huggingface_hub's cached constant."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _images() -> list[Image.Image]:
    """Three distinct RGB images of different sizes (processors must resize)."""
    gradient = Image.linear_gradient("L").resize((48, 40)).convert("RGB")
    return [
        Image.new("RGB", (50, 40), (220, 30, 30)),
        gradient,
        Image.new("RGB", (30, 64), (20, 40, 230)),
    ]


def _check_results(results: list[CaptionResult], n: int) -> None:
    assert len(results) == n
    for r in results:
        assert isinstance(r, CaptionResult)
        assert isinstance(r.text, str)
        assert math.isfinite(r.score) and r.score <= 0.0


# --------------------------------------------------------------------------- import cost


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, core.captioning\n"
        "from core.captioning import (GenerationSettings, CaptionResult, Captioner, load_captioner,\n"
        "    ModelLoadError, DEFAULT_MODEL, resolve_device)\n"
        "heavy = [m for m in ('torch', 'transformers', 'PySide6') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert DEFAULT_MODEL == 'Salesforce/blip-image-captioning-base'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_default_model_is_defined_once() -> None:
    """``core.captioning.DEFAULT_MODEL`` (defined with the job spec) is the only place the default model id is written."""
    literal = "Salesforce/blip-image-captioning-" + "base"
    holders = sorted(str(p.relative_to(REPO)) for folder in ("core", "captiondesk", "desktop_app")
                     for p in (REPO / folder).rglob("*.py") if literal in p.read_text(encoding="utf-8"))
    assert holders == [str(Path("core", "captioning", "job_spec.py"))]


# --------------------------------------------------------------------------- model families


def test_every_family_has_one_id_and_legacy_spellings_resolve() -> None:
    from core.captioning.families import (
        FAMILIES,
        LEGACY_FAMILY_IDS,
        canonical_family_id,
        family_for_model_type,
        get_family,
    )
    from core.training.trainer import TRAINABLE_FAMILIES

    vlms = ["florence2", "llava", "qwen2-vl", "idefics3", "paligemma"]
    assert list(FAMILIES) == ["blip", "blip-2", "git", "vision-encoder-decoder", *vlms, "generic"]
    for family_id, family in FAMILIES.items():
        assert family.id == family_id and get_family(family_id) is family
        assert canonical_family_id(family_id) == family_id
        assert "_" not in family_id  # one spelling: hyphens, like config.model_type
        assert all(family_for_model_type(t) is family for t in family.model_types)
    # Spellings found in stored versions and job records still resolve, to the same object.
    assert get_family("blip2") is FAMILIES["blip-2"]
    assert get_family("vision_encoder_decoder") is FAMILIES["vision-encoder-decoder"]
    assert not set(LEGACY_FAMILY_IDS) & set(FAMILIES) and set(LEGACY_FAMILY_IDS.values()) <= set(FAMILIES)
    assert canonical_family_id("kosmos-2") == "kosmos-2"  # unknown ids pass through unchanged
    with pytest.raises(KeyError, match="unknown model family"):
        get_family("blip3")
    # What each family declares is what the loader and the trainer act on.
    assert sorted(f.id for f in FAMILIES.values() if f.cpu_int8_eligible) == sorted(
        ["blip", "git", "vision-encoder-decoder", "llava", "idefics3"])  # measured: tests/core/captioning/test_vlm_batching.py
    assert TRAINABLE_FAMILIES == ("blip", "blip-2", "git", "vision-encoder-decoder", *vlms)
    # The VLMs cache get_image_features output where the projector is frozen (tests/core/captioning/test_vlm_vision_cache.py).
    assert [f.id for f in FAMILIES.values() if f.supports_vision_cache] == ["blip", "blip-2",
                                                                           "vision-encoder-decoder", *vlms]
    assert FAMILIES["generic"].lora_targets() == "all-linear"


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"num_beams": 0}, "0"),
        ({"num_beams": 2.5}, "2.5"),
        ({"min_new_tokens": -3}, "-3"),
        ({"max_new_tokens": 0}, "0"),
        ({"min_new_tokens": 12, "max_new_tokens": 7}, "7"),
        ({"repetition_penalty": 0.0}, "0.0"),
        ({"repetition_penalty": -1.5}, "-1.5"),
        ({"repetition_penalty": float("nan")}, "nan"),
        ({"prompt": 42}, "42"),
    ],
)
def test_settings_validation_names_the_bad_value(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        GenerationSettings(**kwargs)
    assert bad in str(info.value)


def test_settings_round_trip() -> None:
    settings = GenerationSettings(num_beams=3, min_new_tokens=2, max_new_tokens=9, prompt="a photo of",
                                  repetition_penalty=2)
    data = settings.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert GenerationSettings.from_dict(data) == settings
    assert data["repetition_penalty"] == 2.0
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings.from_dict({**data, "temperature": 0.7})


# --------------------------------------------------------------------------- devices


def test_resolve_device_on_this_machine() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert auto == torch.device("cpu")
    assert default_dtype(torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError) as info:
        resolve_device("cuda")
    assert info.value.kind == "device" and "--device cpu" in str(info.value)


def test_optimization_plans() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    auto = plan_optimizations("auto", cpu)
    assert auto.sdpa and auto.dtype == torch.float32
    none = plan_optimizations("none", cpu)
    assert not (none.sdpa or none.int8) and none.dtype == torch.float32
    gpu_auto = plan_optimizations("auto", gpu)  # planning needs no GPU
    assert not gpu_auto.int8 and gpu_auto.sdpa and gpu_auto.dtype in (torch.float16, torch.bfloat16)
    with pytest.raises(ValueError, match="int8"):
        plan_optimizations("int8", gpu)
    with pytest.raises(ValueError, match="turbo"):
        plan_optimizations("sdpa,turbo", cpu)


# --------------------------------------------------------------------------- every family


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDERS))
def test_family_loads_and_captions(name: str, tiny_model_dirs: dict[str, Path]) -> None:
    folder = tiny_model_dirs[name]
    assert tiny_models.folder_size(folder) < 2_000_000, "tiny models must stay tiny"
    messages: list[str] = []
    captioner = load_captioner(folder, optimize="none", progress=messages.append)
    ident = captioner.identity
    assert ident["family"] == FAMILY_OF[name]
    assert ident["model"] == str(folder.resolve()) and ident["adapter"] is None
    assert isinstance(ident["revision"], str) and len(ident["revision"]) == 12
    assert captioner.device == torch.device("cpu") and captioner.dtype == torch.float32
    assert messages and any("Loading" in m for m in messages)

    images = _images()
    greedy = GenerationSettings(max_new_tokens=6)
    batch = captioner.preprocess(images, greedy)
    results = captioner.generate(batch, greedy)
    _check_results(results, 3)

    # Batching must not change greedy captions (fp32: same text, same score).
    single = [captioner.caption([im], greedy)[0] for im in images]
    assert [r.text for r in results] == [s.text for s in single]
    assert [r.score for r in results] == pytest.approx([s.score for s in single], abs=1e-4)
    # A prepared batch can be generated twice (BLIP mutates input_ids in place).
    assert [r.text for r in captioner.generate(batch, greedy)] == [r.text for r in results]

    beams = GenerationSettings(num_beams=3, min_new_tokens=2, max_new_tokens=5)
    _check_results(captioner.caption(images, beams), 3)
    prompted = GenerationSettings(prompt="a photo of", max_new_tokens=4, repetition_penalty=1.3)
    _check_results(captioner.caption(images[:2], prompted), 2)
    captioner.close()


def test_min_new_tokens_is_honoured(tiny_blip_dir: Path) -> None:
    captioner = load_captioner(tiny_blip_dir, optimize="none")
    settings = GenerationSettings(min_new_tokens=5, max_new_tokens=5)
    batch = captioner.preprocess(_images(), settings)
    inputs = dict(batch.inputs)
    out = captioner.model.generate(**inputs, **captioner._generate_kwargs(settings))
    assert len(out.logits) == 5


def test_batch_and_settings_must_agree(tiny_blip_dir: Path) -> None:
    captioner = load_captioner(tiny_blip_dir, optimize="none")
    batch = captioner.preprocess(_images(), GenerationSettings(prompt="a photo of"))
    with pytest.raises(ValueError, match="preprocess again"):
        captioner.generate(batch, GenerationSettings())
    with pytest.raises(ValueError, match="at least one image"):
        captioner.preprocess([], GenerationSettings())
    with pytest.raises(ValueError, match="RGB"):
        captioner.preprocess([Image.new("L", (8, 8))], GenerationSettings())


def test_preprocess_is_thread_safe(tiny_blip_dir: Path) -> None:
    captioner = load_captioner(tiny_blip_dir, optimize="none")
    prompts = [None, "a photo of", "a picture of the", "the"]
    expected = {p: captioner.preprocess(_images(), GenerationSettings(prompt=p)).inputs for p in prompts}
    errors: list[BaseException] = []

    def work(prompt: str | None) -> None:
        try:
            for _ in range(15):
                got = captioner.preprocess(_images(), GenerationSettings(prompt=prompt)).inputs
                assert got.keys() == expected[prompt].keys()
                assert all(torch.equal(got[k], expected[prompt][k]) for k in got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_out_of_memory_propagates_unchanged(tiny_blip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    captioner = load_captioner(tiny_blip_dir, optimize="none")
    batch = captioner.preprocess(_images(), GenerationSettings())

    def oom(**_kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(captioner.model, "generate", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        captioner.generate(batch, GenerationSettings())


def test_close_releases_the_model(tiny_blip_dir: Path) -> None:
    captioner = load_captioner(tiny_blip_dir, optimize="none")
    captioner.close()
    captioner.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        captioner.preprocess(_images(), GenerationSettings())


# --------------------------------------------------------------------------- scores


@pytest.mark.slow
def test_scores_match_transformers_and_a_teacher_forced_pass(trained_blip_dir: Path) -> None:
    captioner = load_captioner(trained_blip_dir, optimize="none")
    model = captioner.model
    images, _ = tiny_models.shape_dataset(6, seed=7)
    eos = model.config.text_config.sep_token_id
    for beams in (1, 3):
        settings = GenerationSettings(num_beams=beams, max_new_tokens=8)
        batch = captioner.preprocess(images, settings)
        with torch.inference_mode():
            out = model.generate(**batch.inputs, **captioner._generate_kwargs(settings))
        beam_indices = getattr(out, "beam_indices", None)
        tokens, valid, mean = sequence_scores(out.sequences, out.logits, [eos], beam_indices)
        assert valid[:, 0].all()
        reference = model.compute_transition_scores(out.sequences, out.logits, beam_indices, normalize_logits=True)
        reference = reference[:, : tokens.shape[1]]
        expected = (reference * valid).sum(1) / valid.sum(1)
        assert mean.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
        results = captioner.generate(batch, settings)
        assert [r.score for r in results] == pytest.approx(mean.tolist(), abs=1e-6)

    # Independent check: the log-probability of the greedy caption under one
    # teacher-forced forward pass.
    settings = GenerationSettings(max_new_tokens=8)
    results = captioner.caption(images, settings)
    with torch.inference_mode():
        out = model.generate(**captioner.preprocess(images, settings).inputs, **captioner._generate_kwargs(settings))
        tokens, valid, _ = sequence_scores(out.sequences, out.logits, [eos])
        bos = torch.full((len(images), 1), model.config.text_config.bos_token_id)
        pixel_values = captioner.preprocess(images, settings).inputs["pixel_values"]
        logits = model(pixel_values=pixel_values, input_ids=torch.cat([bos, tokens], 1)).logits[:, :-1]
        logprobs = torch.log_softmax(logits.float(), -1).gather(2, tokens.unsqueeze(2)).squeeze(2)
        forced = (logprobs * valid).sum(1) / valid.sum(1)
    assert [r.score for r in results] == pytest.approx(forced.tolist(), abs=1e-4)


def test_sequence_scores_masks_everything_after_eos() -> None:
    gen = torch.Generator().manual_seed(0)
    vocab, eos, pad = 11, 2, 0
    logits = tuple(torch.randn(3, vocab, generator=gen) for _ in range(4))
    prompt = [[7, 8]] * 3
    generated = [[5, 2, 0, 0], [5, 6, 9, 4], [2, 2, 2, 2]]  # early EOS + pad; no EOS; pad == EOS style
    sequences = torch.tensor([p + g for p, g in zip(prompt, generated, strict=True)])
    tokens, valid, mean = sequence_scores(sequences, logits, [eos])
    assert tokens.tolist() == generated
    assert valid.tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False]]
    lp = [torch.log_softmax(step, -1) for step in logits]
    expected = [
        (lp[0][0, 5] + lp[1][0, 2]) / 2,
        sum(lp[t][1, tok] for t, tok in enumerate(generated[1])) / 4,
        lp[0][2, 2],
    ]
    assert mean.tolist() == pytest.approx([float(e) for e in expected], abs=1e-6)
    assert pad not in tokens[valid].tolist()

    # Beam search: each token comes from the row named by beam_indices; -1 = finished.
    beam_logits = tuple(torch.randn(6, vocab, generator=gen) for _ in range(3))  # 2 images x 3 beams
    beam_indices = torch.tensor([[0, 2, -1], [4, 3, 5]])
    sequences = torch.tensor([[7, 5, 2, 0], [7, 6, 9, 4]])  # one prompt token, 3 generated
    tokens, valid, mean = sequence_scores(sequences, beam_logits, [eos], beam_indices)
    blp = [torch.log_softmax(step, -1) for step in beam_logits]
    assert valid.tolist() == [[True, True, False], [True, True, True]]
    assert mean.tolist() == pytest.approx(
        [float((blp[0][0, 5] + blp[1][2, 2]) / 2), float((blp[0][4, 6] + blp[1][3, 9] + blp[2][5, 4]) / 3)], abs=1e-6
    )


@pytest.mark.slow
def test_trained_model_captions_and_prompt_is_stripped(trained_blip_dir: Path) -> None:
    captioner = load_captioner(trained_blip_dir, optimize="none")
    images, captions = tiny_models.shape_dataset(24, seed=11)
    results = captioner.caption(images, GenerationSettings(max_new_tokens=8))
    colours = [c.split()[1] for c in captions]
    # The colour is easy at 32 px; it must be learned (chance is 25 %).
    assert sum(r.text.split()[1:2] == [c] for r, c in zip(results, colours, strict=True)) >= 20
    assert sum(r.score for r in results) / len(results) > -1.0  # confident, unlike a random model
    prompted = captioner.caption(images[:4], GenerationSettings(prompt=f"a {colours[0]}", max_new_tokens=8))
    for r in prompted:
        assert r.text and not r.text.startswith("a ")  # continuation only
        assert r.text.split()[0] in tiny_models.SHAPES


# --------------------------------------------------------------------------- speed paths


def test_sdpa_attention_matches_the_original_module(tiny_blip_dir: Path) -> None:
    from transformers import BlipForConditionalGeneration
    from transformers.models.blip.modeling_blip import BlipAttention

    model = BlipForConditionalGeneration.from_pretrained(tiny_blip_dir)
    module = next(m for m in model.modules() if type(m) is BlipAttention)
    patched_cls = _sdpa_blip_attention_class(BlipAttention)
    assert _verify_patch(module, patched_cls) <= SDPA_TOLERANCE
    # Longer sequences and batch 3, directly.
    x = torch.randn(3, 17, module.embed_dim, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = module(x)[0]
        module.__class__ = patched_cls
        got = module(x)[0]
    assert (expected - got).abs().max().item() <= SDPA_TOLERANCE
    assert BlipAttention.forward is not patched_cls.forward  # the transformers class is untouched


def test_sdpa_path_gives_identical_captions(trained_blip_dir: Path) -> None:
    images, _ = tiny_models.shape_dataset(24, seed=3)
    settings = GenerationSettings(max_new_tokens=8)
    plain = load_captioner(trained_blip_dir, optimize="none")
    fast = load_captioner(trained_blip_dir, optimize="sdpa")
    assert fast.identity["optimizations"] == ["sdpa"]
    patched = [m for m in fast.model.modules() if type(m).__name__ == "SdpaBlipAttention"]
    assert len(patched) == 2  # both vision layers
    ref, got = plain.caption(images, settings), fast.caption(images, settings)
    assert [r.text for r in got] == [r.text for r in ref]
    assert [r.score for r in got] == pytest.approx([r.score for r in ref], abs=1e-5)


def test_int8_path_stays_close_to_fp32(trained_blip_dir: Path) -> None:
    """int8 is lossy: on a trained model it may flip at most a few borderline captions."""
    images, _ = tiny_models.shape_dataset(48, seed=5)
    settings = GenerationSettings(max_new_tokens=8)
    ref = load_captioner(trained_blip_dir, optimize="none").caption(images, settings)
    fast = load_captioner(trained_blip_dir)  # the default "auto" path on CPU
    assert fast.identity["optimizations"] == ["sdpa", "int8"]
    quantized = [n for n, m in fast.model.named_modules() if type(m).__name__ == "Linear"
                 and type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert len(quantized) > 20
    head = fast.model.text_decoder.cls.predictions.decoder
    assert isinstance(head, RescoredInt8Head)  # int8 logits, top candidates rescored in fp32
    assert head.weight is fast.model.text_decoder.bert.embeddings.word_embeddings.weight  # tied: no fp32 copy
    got = fast.caption(images, settings)
    same = sum(a.text == b.text for a, b in zip(got, ref, strict=True))
    assert same >= 0.9 * len(images), f"only {same}/{len(images)} captions unchanged by int8"
    diffs = [abs(a.score - b.score) for a, b in zip(got, ref, strict=True) if a.text == b.text]
    assert sum(diffs) / len(diffs) < 0.02 and max(diffs) < 0.1


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning",
                            "ignore:torch.quantize_per_tensor:UserWarning")
def test_rescored_int8_head_never_lets_int8_rounding_pick_the_token() -> None:
    """Plain int8 logits flip near-tie argmaxes; the rescored head returns fp32's choice and values."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 5000)
    hidden = torch.randn(512, 64)
    with torch.inference_mode():
        reference = linear(hidden)
        plain = quantize_dynamic(torch.nn.Sequential(linear), {"0": per_channel_dynamic_qconfig},
                                 dtype=torch.qint8, inplace=False)(hidden)
        head = RescoredInt8Head(linear)
        got = head(hidden)
        got_3d = head(hidden.view(8, 64, 64))
    # The test is only meaningful if int8 alone does get some tokens wrong.
    assert (plain.argmax(-1) != reference.argmax(-1)).sum() > 5
    assert torch.equal(got.argmax(-1), reference.argmax(-1))
    top = reference.topk(8, dim=-1)
    assert torch.allclose(got.gather(-1, top.indices), top.values, atol=1e-5)
    assert torch.allclose(got_3d.view(512, -1), got, atol=1e-5)
    # Everything else is the int8 approximation, close to fp32.
    assert (got - reference).abs().max() < 0.1
    assert head.weight is linear.weight and linear.weight.dtype == torch.float32  # shared, untouched


@pytest.mark.parametrize("fixture", ["trained_blip_dir", "tiny_blip_dir"])
def test_int8_caption_does_not_depend_on_its_batch_mates(fixture: str, request: pytest.FixtureRequest) -> None:
    """The real int8 path: one image alone and inside batches of other images gets identical text and score.

    The random-weight model is the sharp case: every step is a near-tie, so any
    batch-dependent int8 rounding (a per-batch activation scale) flips tokens and scores.
    """
    from core.captioning.int8_linear import PerImageInt8Linear

    captioner = load_captioner(request.getfixturevalue(fixture))  # auto on the CPU: sdpa + int8
    assert "int8" in captioner.identity["optimizations"]
    assert any(isinstance(m, PerImageInt8Linear) for m in captioner.model.modules())
    images, _ = tiny_models.shape_dataset(24, seed=7)
    # Batch mates with very different activation ranges (bright noise, black).
    rng = np.random.default_rng(3)
    noise = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB") for _ in range(3)]
    mates = [*noise, Image.new("RGB", (64, 64)), *images[8:]]
    for settings in (GenerationSettings(max_new_tokens=8), GenerationSettings(max_new_tokens=8, num_beams=3)):
        for target in images[:4]:
            alone = captioner.caption([target], settings)[0]
            for batch in ([target, *mates[:7]], [*mates[3:8], target], [*mates[8:15], target, *mates[:3]]):
                got = captioner.caption(batch, settings)[batch.index(target)]
                assert (got.text, got.score) == (alone.text, alone.score)


def test_rescored_lm_head_gives_the_captions_of_an_fp32_head(trained_blip_dir: Path) -> None:
    """Greedy and beam captions with the rescored int8 head equal those with an fp32 head."""
    from core.captioning.optimize import quantize_int8

    images, _ = tiny_models.shape_dataset(32, seed=11)
    fast = load_captioner(trained_blip_dir)  # auto: rescored head
    fp32_head = load_captioner(trained_blip_dir, optimize="sdpa")
    quantize_int8(fp32_head.model, rescore_lm_head=False)
    assert type(fp32_head.model.text_decoder.cls.predictions.decoder) is torch.nn.Linear
    for settings in (GenerationSettings(max_new_tokens=8), GenerationSettings(max_new_tokens=8, num_beams=3)):
        ref, got = fp32_head.caption(images, settings), fast.caption(images, settings)
        assert [r.text for r in got] == [r.text for r in ref]
        assert [r.score for r in got] == pytest.approx([r.score for r in ref], abs=2e-3)


# --------------------------------------------------------------------------- load errors


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_captioner(tmp_path)
    msg = str(info.value)
    assert info.value.kind == "bad_model" and str(tmp_path) in msg and "config.json" in msg


def test_garbage_config(tmp_path: Path, tiny_blip_dir: Path) -> None:
    folder = _copy(tiny_blip_dir, tmp_path / "m")
    (folder / "config.json").write_text("{not json at all", encoding="utf-8")
    with pytest.raises(ModelLoadError) as info:
        load_captioner(folder)
    assert str(folder) in str(info.value) and "not valid JSON" in str(info.value)


def test_config_without_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 8}', encoding="utf-8")
    with pytest.raises(ModelLoadError, match="model_type"):
        load_captioner(tmp_path)


def test_unknown_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "holo-captioner-9000"}', encoding="utf-8")
    with pytest.raises(ModelLoadError, match="holo-captioner-9000"):
        load_captioner(tmp_path)


def test_known_architecture_that_cannot_caption(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_captioner(tmp_path)
    assert info.value.kind == "unsupported" and "bert" in str(info.value) and "blip" in str(info.value)


def test_truncated_weights(tmp_path: Path, tiny_blip_dir: Path) -> None:
    folder = _copy(tiny_blip_dir, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as info:
        load_captioner(folder)
    msg = str(info.value)
    assert str(folder) in msg and "incomplete or corrupt" in msg


def test_missing_weights(tmp_path: Path, tiny_blip_dir: Path) -> None:
    folder = _copy(tiny_blip_dir, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights file"):
        load_captioner(folder)


def test_weights_of_another_model(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> None:
    folder = _copy(tiny_model_dirs["blip"], tmp_path / "m")
    shutil.copy(tiny_model_dirs["git"] / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match="missing from the weights file"):
        load_captioner(folder)


def test_missing_processor(tmp_path: Path, tiny_blip_dir: Path) -> None:
    folder = _copy(tiny_blip_dir, tmp_path / "m")
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ModelLoadError) as info:
        load_captioner(folder)
    msg = str(info.value)
    assert str(folder) in msg and "preprocessor_config.json" in msg and "tokenizer.json" in msg


def test_paths_that_do_not_exist(tmp_path: Path, tiny_blip_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_captioner(tmp_path / "nope" / "model")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_captioner(tiny_blip_dir / "config.json")


@pytest.mark.parametrize("local_files_only", [None, True])
def test_unknown_hub_id_offline(local_files_only: bool | None) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_captioner("captiondesk-tests/no-such-model", local_files_only=local_files_only)
    msg = str(info.value)
    assert info.value.kind == "not_downloaded"
    assert "captiondesk-tests/no-such-model" in msg and "not downloaded" in msg
    assert "local folder" in msg and "--model" in msg
    assert "Traceback" not in msg


# --------------------------------------------------------------------------- adapters


def _make_adapter(base_dir: Path, out: Path, *, target_modules: list[str], seed: int = 0) -> object:
    """A LoRA adapter with non-zero (perturbed) weights; returns the in-memory PeftModel."""
    from peft import LoraConfig, get_peft_model
    from transformers import BlipForConditionalGeneration

    base = BlipForConditionalGeneration.from_pretrained(base_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=target_modules))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:  # lora_B starts at zero, which would be a no-op adapter
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    peft_model.save_pretrained(out)
    return peft_model.eval()


@pytest.mark.slow
def test_adapter_changes_captions_and_matches_peft(tmp_path: Path, trained_blip_dir: Path) -> None:
    from core.captioning.families.blip import BlipCaptioner

    adapter_dir = tmp_path / "adapter"
    peft_model = _make_adapter(trained_blip_dir, adapter_dir, target_modules=["query", "value"])
    images, _ = tiny_models.shape_dataset(8, seed=9)
    settings = GenerationSettings(max_new_tokens=8)

    base = load_captioner(trained_blip_dir, optimize="none")
    adapted = load_captioner(trained_blip_dir, adapter=adapter_dir, optimize="none")
    assert adapted.identity["adapter"]["path"] == str(adapter_dir.resolve())
    assert len(adapted.identity["adapter"]["sha256"]) == 12
    assert "lora" not in type(adapted.model).__name__.lower()  # merged into plain weights

    # The in-memory (unmerged) PEFT model, run through the same captioning code.
    in_memory = BlipCaptioner(peft_model, base.processor, base.tokenizer, identity={}, family=base.family,
                              device=torch.device("cpu"), dtype=torch.float32)
    expected = in_memory.caption(images, settings)
    got = adapted.caption(images, settings)
    plain = base.caption(images, settings)
    assert [r.text for r in got] == [r.text for r in expected]
    assert [r.score for r in got] == pytest.approx([r.score for r in expected], abs=1e-4)
    assert [(r.text, round(r.score, 4)) for r in got] != [(r.text, round(r.score, 4)) for r in plain]

    # And the default (int8) path still applies on top of the merged adapter.
    fast = load_captioner(trained_blip_dir, adapter=adapter_dir)
    assert fast.identity["optimizations"] == ["sdpa", "int8"]
    _check_results(fast.caption(images, settings), len(images))


@pytest.mark.slow
def test_adapter_errors(tmp_path: Path, tiny_blip_dir: Path, tiny_model_dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_captioner(tiny_blip_dir, adapter=tmp_path / "missing-adapter")
    assert info.value.kind == "bad_adapter" and "does not exist" in str(info.value)

    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json"):
        load_captioner(tiny_blip_dir, adapter=tmp_path / "not-an-adapter")

    # An adapter for modules this model does not have.
    adapter_dir = tmp_path / "adapter"
    _make_adapter(tiny_blip_dir, adapter_dir, target_modules=["query", "value"])
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = ["no_such_projection"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError) as info:
        load_captioner(tiny_blip_dir, adapter=adapter_dir)
    assert info.value.kind == "bad_adapter" and str(adapter_dir) in str(info.value)

    # A BLIP adapter on GIT: GIT also has "query"/"value" layers, so peft
    # builds LoRA layers and merely *warns* that no weights matched.
    blip_adapter = tmp_path / "blip-adapter"
    _make_adapter(tiny_blip_dir, blip_adapter, target_modules=["query", "value"])
    with pytest.raises(ModelLoadError) as info:
        load_captioner(tiny_model_dirs["git"], adapter=blip_adapter)
    assert info.value.kind == "bad_adapter" and "does not fit" in str(info.value)

    # A BLIP adapter on a BLIP of another size: same names, other shapes.
    bigger = tiny_models.build_tiny_blip(tmp_path / "bigger-blip", hidden_size=96)
    with pytest.raises(ModelLoadError) as info:
        load_captioner(bigger, adapter=blip_adapter)
    assert info.value.kind == "bad_adapter" and "does not fit" in str(info.value)


def test_nan_scores_fail_the_batch(tiny_blip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.captioning import GenerationError

    captioner = load_captioner(tiny_blip_dir, optimize="none")
    real_generate = captioner.model.generate

    def nan_logits(**kwargs: object) -> object:
        out = real_generate(**kwargs)
        out.logits = tuple(torch.full_like(step, float("nan")) for step in out.logits)
        return out

    monkeypatch.setattr(captioner.model, "generate", nan_logits)
    with pytest.raises(GenerationError, match="NaN"):
        captioner.caption(_images(), GenerationSettings(max_new_tokens=3))
