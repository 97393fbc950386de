"""The Train dialog's restyler choice: "Train a restyler on the N model captions people corrected".

Offered only when the library holds such pairs (:func:`core.restyle.pairs.count_restyle_pairs`);
checked, the dialog's run is ``train --restyler``'s (:func:`core.restyle.training.train_restyler`)
with the base model field naming a text language model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QCheckBox

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.library import Library

#: What the base model field suggests for a restyler (a small instruction-tuned causal LM).
RESTYLER_BASE_HINT = "a text model: folder or hub id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct"


def restyler_checkbox(library: Library) -> QCheckBox:
    """The choice, saying how many pairs there are; disabled (with the reason) when there are none."""
    from core.restyle.pairs import count_restyle_pairs

    count = count_restyle_pairs(library)
    box = QCheckBox(f"Train a restyler instead, on the {count:,} model captions people corrected or accepted"
                    if count else "Train a restyler (no model caption corrected by a person yet)")
    box.setObjectName("trainRestyler")
    box.setProperty("pairs", count)
    box.setEnabled(count > 0)
    box.setToolTip("A text language model learns to rewrite the captioner's descriptions the way people "
                   "corrected them; Caption images… → Then restyle with… applies it." if count else
                   "Correct or accept some model captions in the review first: each is a training pair.")
    return box


def restyler_train_fn() -> Callable[..., Any]:
    """The dialog's training function for a restyler (same signature as ``core.training.train``)."""
    from core.restyle.training import train_restyler

    return lambda library, base, name, config, **callbacks: train_restyler(
        library, base, name, config, progress=callbacks.get("progress"), cancel=callbacks.get("cancel"),
        on_epoch=callbacks.get("on_epoch"))
