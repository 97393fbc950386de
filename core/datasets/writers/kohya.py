"""kohya sd-scripts' DreamBooth-style folders and its ``--dataset_config`` TOML."""

from __future__ import annotations

import json
from pathlib import Path

from core.datasets.items import ExportItem, caption_file_text, image_data
from core.datasets.naming import export_layout
from core.datasets.writers import base

KOHYA_CONCEPT = "captions"
DEFAULT_KOHYA_REPEATS = 1


class KohyaWriter:
    """sd-scripts' DreamBooth-style folders: ``<split>/<repeats>_<concept>/`` + TOML configs."""

    by_stem = True
    #: The TOML notes the template the captions were made with (``export --template``).
    records_template = True

    def __init__(self, root: Path, caption_extension: str, repeats: int = DEFAULT_KOHYA_REPEATS,
                 template: str | None = None) -> None:
        self.root = root
        self.template = template
        self.caption_extension = caption_extension
        #: Validation images are looked at once: repeats only weight training.
        self.folders = {"train": f"{repeats}_{KOHYA_CONCEPT}", "validation": f"1_{KOHYA_CONCEPT}"}
        self.repeats = {"train": repeats, "validation": 1}
        self.used: set[str] = set()

    @staticmethod
    def dataset_name(wanted: str) -> str:
        """Flat (sd-scripts does not recurse), with a suffix sd-scripts reads."""
        layout = export_layout("kohya")
        return layout.name(wanted) if layout is not None else wanted

    def add(self, item: ExportItem) -> None:
        image_path = self.root / item.split / self.folders[item.split] / item.name
        base.write_bytes(image_path, image_data(item))
        base.write_bytes(image_path.with_suffix(self.caption_extension), caption_file_text(item).encode("utf-8"))
        self.used.add(item.split)

    def close(self) -> None:
        # sd-scripts has no option that loads a second config as validation data (a second
        # --dataset_config would train on it), so only the train split gets a config.
        if "train" not in self.used:
            return
        held_out = (
            f"# The held-out images in validation/{self.folders['validation']}/ are in no config, so\n"
            "# sd-scripts never trains on them: judge the trained model on them yourself (e.g.\n"
            "# caption or generate from them and compare with their .txt captions). Do not pass\n"
            "# a config of that folder to sd-scripts: every --dataset_config is training data.\n"
            if "validation" in self.used
            else ""
        )
        made = f"# Each caption file is the template {json.dumps(self.template, ensure_ascii=False)}.\n" \
            if self.template else ""
        config = (
            "# kohya sd-scripts dataset config (--dataset_config) of the train split, written\n"
            "# by CaptionDesk. image_dir is relative: run sd-scripts from this folder.\n"
            f"{made}{held_out}"
            "[general]\n"
            f"caption_extension = {json.dumps(self.caption_extension)}\n"
            "shuffle_caption = false\n\n"
            "[[datasets]]\n\n"
            "  [[datasets.subsets]]\n"
            f"  image_dir = {json.dumps('train/' + self.folders['train'])}\n"
            f"  num_repeats = {self.repeats['train']}\n"
        )
        (self.root / "dataset_train.toml").write_text(config, encoding="utf-8")



WRITER = KohyaWriter
