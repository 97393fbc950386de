"""Regenerate CaptionDesk's application icons with Pillow (no other tools needed).

    python resources/generate_icons.py

Writes, next to this script:

* ``captiondesk.png``  256x256, Linux ``.desktop`` icon and window icon;
* ``captiondesk.ico``  16..256 px, Windows executable icon;
* ``captiondesk.icns`` 16..1024 px, macOS application icon.

The design is deliberately flat (few colours) so every file stays small (< 200 KB).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
BACKGROUND = (37, 99, 235, 255)  # blue
PAPER = (255, 255, 255, 255)
ACCENT = (251, 191, 36, 255)  # amber "sun" of the photo
HILL = (34, 197, 94, 255)  # green


def draw_icon(size: int = 1024) -> Image.Image:
    """A rounded tile holding a photo (sun + hill) over caption lines."""
    s = size / 1024
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([int(40 * s), int(40 * s), int(984 * s), int(984 * s)], radius=int(200 * s), fill=BACKGROUND)
    # the photo
    px0, py0, px1, py1 = int(190 * s), int(170 * s), int(834 * s), int(610 * s)
    d.rounded_rectangle([px0, py0, px1, py1], radius=int(40 * s), fill=PAPER)
    inner = [int(230 * s), int(210 * s), int(794 * s), int(570 * s)]
    d.rectangle(inner, fill=(191, 219, 254, 255))
    d.ellipse([int(610 * s), int(250 * s), int(720 * s), int(360 * s)], fill=ACCENT)
    d.polygon(
        [(inner[0], inner[3]), (int(420 * s), int(330 * s)), (int(560 * s), int(470 * s)),
         (int(650 * s), int(400 * s)), (inner[2], inner[3])],
        fill=HILL,
    )
    # caption lines
    for y, right in ((690, 834), (790, 700)):
        d.rounded_rectangle([int(190 * s), int(y * s), int(right * s), int((y + 56) * s)], radius=int(28 * s), fill=PAPER)
    return img


def main() -> None:
    big = draw_icon(1024)
    big.resize((256, 256), Image.LANCZOS).save(HERE / "captiondesk.png", optimize=True)
    # The window icon ships as package data of desktop_app (pip installs and bundles).
    shutil.copyfile(HERE / "captiondesk.png", HERE.parent / "desktop_app" / "resources" / "captiondesk.png")
    big.save(HERE / "captiondesk.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    big.save(HERE / "captiondesk.icns")
    for name in ("captiondesk.png", "captiondesk.ico", "captiondesk.icns"):
        print(f"{name}: {(HERE / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
