"""Caption presets and prompt templates (core/captioning/presets.py), through the engine, CLI and trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from captiondesk.cli import main
from core.captioning import get_family
from core.captioning.engine import run_caption_job
from core.captioning.families import FAMILIES
from core.captioning.job_spec import CaptionJobSpec, GenerationSettings
from core.captioning.presets import (
    ALT_TEXT_MAX_CHARS,
    PRESETS,
    UnsupportedPresetError,
    fit_to_length,
    supported_presets,
    template_variables,
)
from core.captioning.prompting import (
    NO_PROMPT,
    ImageVariables,
    PromptPlan,
    plan_prompt,
    prompt_batches,
    render_prompts,
)
from core.captions import set_human_caption
from core.library import Library
from core.models import Caption, Image
from core.training import TrainingConfig, evaluate_model, train, versions

PREFIX_FAMILIES = [f for f in FAMILIES.values() if f.prompt_style == "prefix"]


@pytest.mark.parametrize("family", PREFIX_FAMILIES, ids=lambda f: f.id)
def test_prefix_families_support_unconditional_presets_and_refuse_the_rest(family) -> None:
    assert supported_presets(family) == ["short", "alt_text", "t2i_prompt"]
    for preset in ("short", "alt_text", "t2i_prompt"):
        assert PromptPlan.for_family(family, preset=preset, template=None).render() is None  # unconditional
    for preset in ("detailed", "more_detailed", "keywords"):
        with pytest.raises(UnsupportedPresetError, match=rf"cannot write the '{preset}' preset.*short, alt_text"):
            PromptPlan.for_family(family, preset=preset, template=None)


def test_instruction_and_florence_presets() -> None:
    for family_id in ("generic", "llava", "qwen2-vl", "idefics3", "paligemma"):
        family = get_family(family_id)
        for preset in PRESETS.values():  # chat VLMs: the preset's instruction
            assert PromptPlan.for_family(family, preset=preset.id, template=None).render() == preset.instruction
    florence2 = get_family("florence2")
    florence = {p: PromptPlan.for_family(florence2, preset=p, template=None).render()
                for p in ("short", "detailed", "more_detailed")}
    assert florence == {"short": "<CAPTION>", "detailed": "<DETAILED_CAPTION>",
                        "more_detailed": "<MORE_DETAILED_CAPTION>"}
    with pytest.raises(UnsupportedPresetError, match="task tokens.*detailed \\(<DETAILED_CAPTION>\\)"):
        PromptPlan.for_family(florence2, preset="keywords", template=None)


def test_template_variables_render_per_image() -> None:
    template = "{folder}|{file_name}|{keywords}|{description}|{current_caption}"
    assert template_variables(template) == {"folder", "file_name", "keywords", "description", "current_caption"}
    plan = PromptPlan.for_family(get_family("blip"), preset=None, template=template)
    image = ImageVariables("/photos/beach/IMG_1.jpg", "a dog", ("sky", "sea"), "holiday")
    assert plan.render(image) == "beach|IMG_1|sky, sea|holiday|a dog"
    assert plan.render(ImageVariables("/p/x/y.png")) == "x|y|||"
    assert plan.provenance("p") == {"preset": None, "prompt_template": template, "prompt": "p"}
    with pytest.raises(ValueError, match=r"unknown variable.*\{place\}"):
        template_variables("a photo of {place}")
    with pytest.raises(ValueError, match="not both"):
        CaptionJobSpec(preset="short", prompt_template="x")
    with pytest.raises(ValueError, match="unknown preset"):
        CaptionJobSpec(preset="poem")


def test_alt_text_is_cut_at_a_word_boundary() -> None:
    long = " ".join(["word"] * 60)
    cut = fit_to_length(long, ALT_TEXT_MAX_CHARS)
    assert len(cut) <= ALT_TEXT_MAX_CHARS and long.startswith(cut) and not cut.endswith(" ")
    assert fit_to_length("short", ALT_TEXT_MAX_CHARS) == "short"
    assert PromptPlan.for_family(get_family("blip"), preset="alt_text", template=None).finish(long) == cut


def test_plan_prompt_reuses_the_trained_prompt_only_when_none_is_asked() -> None:
    blip, trained = get_family("blip"), (None, "a photo from {folder}")
    assert plan_prompt(blip, preset=None, template=None, trained=trained).template == "a photo from {folder}"
    assert plan_prompt(blip, preset="short", template=None, trained=trained).preset == "short"
    assert plan_prompt(blip, preset=None, template="x", trained=trained).template == "x"
    # A raw prompt in the generation settings is a request too: the trained one is not added.
    assert plan_prompt(blip, preset=None, template=None, trained=trained, explicit_prompt=True).template is None
    assert plan_prompt(None, preset=None, template=None) == NO_PROMPT
    with pytest.raises(ValueError, match="needs the model's family"):
        plan_prompt(None, preset=None, template=None, trained=trained)


def test_prompts_render_in_bulk_and_batch_by_prompt() -> None:
    plan = plan_prompt(get_family("blip"), preset=None, template="{folder}: {current_caption}")
    paths = ["/p/a/1.jpg", "/p/b/2.jpg", "/p/a/3.jpg", "/p/a/4.jpg", "/p/b/5.jpg"]
    prompts = render_prompts(plan, paths, ["dog", None, "dog", "dog", None])
    assert prompts == ["a: dog", "b:", "a: dog", "a: dog", "b:"]
    assert render_prompts(NO_PROMPT, paths) == [None] * 5
    settings = GenerationSettings(max_new_tokens=5)
    batches = prompt_batches(paths, prompts, 2, settings)
    assert [(s.prompt, items) for s, items in batches] == [
        ("a: dog", ["/p/a/1.jpg", "/p/a/3.jpg"]), ("a: dog", ["/p/a/4.jpg"]), ("b:", ["/p/b/2.jpg", "/p/b/5.jpg"])]
    assert all(s.max_new_tokens == 5 for s, _ in batches)
    assert prompt_batches(paths, [None] * 5, 5, settings) == [(settings, paths)]


def _library_with_folders(tmp_path: Path) -> tuple[Library, dict[str, int]]:
    import pyexiv2

    photos = tmp_path / "photos"
    for folder in ("beach", "tree"):
        (photos / folder).mkdir(parents=True)
        for i in range(3):
            PILImage.new("RGB", (48, 48), (40 * i, 90, 200)).save(photos / folder / f"cat{i}.jpg")
    with pyexiv2.Image(str(photos / "beach" / "cat0.jpg")) as im:
        im.modify_xmp({"Xmp.dc.subject": ["sky", "house"]})
    library = Library(tmp_path / "lib.db")
    library.scan([library.add_root(photos).id])
    with library.db.read() as session:
        ids = {p: i for i, p in session.execute(select(Image.id, Image.rel_path))}
    return library, ids


def _current(library: Library) -> dict[str, Caption]:
    with library.db.read() as session:
        rows = session.execute(select(Image.rel_path, Caption).join(Caption, Caption.image_id == Image.id)
                               .where(Caption.is_current.is_(True))).all()
        return {path: caption for path, caption in rows}


def test_engine_renders_templates_per_image_and_stores_them_in_provenance(tiny_blip_dir, tmp_path) -> None:
    library, ids = _library_with_folders(tmp_path)
    try:
        template = "{folder} {keywords} {current_caption}"
        with library.db.write() as session:  # a current caption (a person's: the image is then not re-captioned)
            set_human_caption(session, ids["tree/cat2.jpg"], "a small dog")
        spec = CaptionJobSpec(model=str(tiny_blip_dir), device="cpu", optimize="none", prompt_template=template,
                              batch_size=4, generation=GenerationSettings(max_new_tokens=8))  # tiny model: 48 positions
        stats = run_caption_job(library, spec)
        assert stats.captioned == 5
        current = _current(library)
        prompts = {path: c.provenance.prompt for path, c in current.items() if c.source == "model"}
        assert prompts == {"beach/cat0.jpg": "beach sky, house", "beach/cat1.jpg": "beach",
                           "beach/cat2.jpg": "beach", "tree/cat0.jpg": "tree", "tree/cat1.jpg": "tree"}
        for path, caption in current.items():
            if caption.source == "model":
                assert caption.provenance.prompt_template == template and caption.provenance.preset is None
                assert caption.provenance.generation["prompt"] == prompts[path]  # what generate() was given
        # {current_caption}: the model captions just written are the current ones on a re-run.
        before = {p: c.text for p, c in current.items()}
        spec = spec.with_(prompt_template="{current_caption}", overwrite_model_captions=True)
        assert run_caption_job(library, spec).captioned == 5
        after = _current(library)
        assert after["tree/cat2.jpg"].text == "a small dog"  # a person's caption is never touched
        assert {p: c.provenance.prompt for p, c in after.items() if c.source == "model"} == {
            p: before[p] or None for p in prompts}
    finally:
        library.close()


def test_presets_in_the_cli_and_a_clear_error_for_unsupported_ones(tiny_blip_dir, tmp_path, capsys) -> None:
    library, _ = _library_with_folders(tmp_path)
    library.close()
    base = ["--library", str(tmp_path / "lib.db"), "caption", "--all", "--model", str(tiny_blip_dir),
            "--device", "cpu", "--optimize", "none"]
    assert main([*base, "--preset", "detailed"]) != 0
    err = capsys.readouterr().err
    assert "cannot write the 'detailed' preset" in err and "short, alt_text, t2i_prompt" in err
    assert main([*base, "--preset", "alt_text"]) == 0
    library = Library(tmp_path / "lib.db")
    try:
        current = _current(library)
        assert len(current) == 6
        assert all(c.provenance.preset == "alt_text" and c.provenance.prompt is None for c in current.values())
        assert all(len(c.text) <= ALT_TEXT_MAX_CHARS for c in current.values())
    finally:
        library.close()
    capsys.readouterr()
    # Nothing left to caption: an unsupported preset is still refused (the family is read
    # from the model folder's config.json), and a new preset says why nothing happened.
    assert main([*base, "--preset", "detailed"]) == 2
    assert "cannot write the 'detailed' preset" in capsys.readouterr().err
    assert main([*base, "--preset", "short"]) == 0
    err = capsys.readouterr().err
    assert "6 photos already captioned" in err and "--overwrite-model-captions" in err


def test_training_records_the_template_and_captioning_with_the_version_reuses_it(tiny_blip_dir, tmp_path) -> None:
    library, ids = _library_with_folders(tmp_path)
    try:
        with library.db.write() as session:
            for path, image_id in ids.items():
                set_human_caption(session, image_id, "a photo of a cat")
        # More photos so both splits have enough examples.
        photos = tmp_path / "photos"
        for i in range(3, 12):
            for k, folder in enumerate(("beach", "tree")):  # distinct pixels: duplicates are one example
                PILImage.new("RGB", (48, 48), (20 * i, 90 + 60 * k, 200)).save(photos / folder / f"cat{i}.jpg")
        library.scan()
        with library.db.write() as session:
            for image in session.scalars(select(Image)):
                set_human_caption(session, image.id, "a photo of a cat")
        config = TrainingConfig(method="full", lr=3e-3, epochs=1, batch_size=8, val_ratio=0.3, patience=0,
                                prompt_template="{folder}", device="cpu", max_new_tokens=8)
        result = train(library, str(tiny_blip_dir), "prompted", config)
        version = versions.get_version(library, "prompted")
        assert version.config["prompt_template"] == "{folder}" and version.config["preset"] is None
        assert result.validation_size >= 2
        # Evaluating the version again captions with its template: the same metrics as training's best epoch.
        again = evaluate_model(library, "prompted", val_ratio=0.3, device="cpu", max_new_tokens=8)
        assert again.metrics == result.metrics
        # Captioning with the version (no preset or template given) reuses the template.
        PILImage.new("RGB", (48, 48), (5, 5, 5)).save(tmp_path / "photos" / "tree" / "new.jpg")
        library.scan()
        stats = run_caption_job(library, CaptionJobSpec(model="prompted", device="cpu", optimize="none"))
        assert stats.captioned == 1
        caption = _current(library)["tree/new.jpg"]
        assert caption.provenance.prompt_template == "{folder}" and caption.provenance.prompt == "tree"
        # The version's confidence calibration (fitted on its validation split) scores its captions.
        assert version.config["confidence_calibration"]["kind"] == "token_baseline"
        assert caption.provenance.score_kind == "mean_logprob"
        assert caption.score == pytest.approx(caption.provenance.scores["mean_logprob"], abs=1e-4)
        assert {"calibrated_mean", "calibrated_min_token"} <= set(caption.provenance.scores)
    finally:
        library.close()


def test_training_batch_puts_the_prompt_first_and_masks_it(tiny_blip_dir) -> None:
    from core.captioning import load_captioner

    family = get_family("blip")
    with load_captioner(str(tiny_blip_dir), device="cpu", optimize="none") as captioner:
        batch = family.encode_training_batch(captioner, ["a red circle", "a cat"], 20, prompts=["beach", None])
        tok = captioner.tokenizer
        row0 = batch["input_ids"][0].tolist()
        bos = captioner.model.config.text_config.bos_token_id
        assert row0[:2] == [bos, tok.convert_tokens_to_ids("beach")]
        labels0 = batch["labels"][0].tolist()
        assert labels0[:2] == [-100, -100] and labels0[2] == tok.convert_tokens_to_ids("a")
        assert batch["input_ids"][1].tolist()[1] == tok.convert_tokens_to_ids("a")  # no prompt: caption first
        # Same rows as the unprompted encoding when no caption has a prompt.
        plain = family.encode_training_batch(captioner, ["a cat"], 20)
        assert family.encode_training_batch(captioner, ["a cat"], 20, prompts=[None])["input_ids"].equal(
            plain["input_ids"])
