"""Decoding the awkward-file corpus: correct RGB or a clear per-image error."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.imaging import ImageDecodeError, ensure_thumbnail, load_rgb, probe, thumbnail_path
from tests.support.imagegen import make_corpus, write_jpeg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("zero_byte", "empty"),
        ("text_as_jpg", "not an image"),
        ("truncated_jpeg", "truncated"),
        ("bomb", "too large to decode safely"),
    ],
)
def test_broken_files_give_a_clear_error(corpus: dict[str, Path], name: str, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        load_rgb(corpus[name])


def test_header_probe_rejects_bomb_without_decoding(corpus: dict[str, Path]) -> None:
    with pytest.raises(ImageDecodeError, match="400000000 pixels"):
        probe(corpus["bomb"])


def test_truncated_jpeg_probes_but_does_not_decode(corpus: dict[str, Path]) -> None:
    # The header is intact, so the scanner accepts it; decoding must still refuse to
    # hand a half-grey image to the captioner.
    assert probe(corpus["truncated_jpeg"]).format == "JPEG"
    with pytest.raises(ImageDecodeError):
        load_rgb(corpus["truncated_jpeg"], max_size=64)


def test_16bit_png_is_scaled_not_saturated(corpus: dict[str, Path]) -> None:
    image = load_rgb(corpus["png16"])
    assert image.mode == "RGB"
    values = [image.getpixel((x, y))[0] for x, y in ((0, 0), (32, 32), (63, 63))]
    # 16-bit ramp 0..65520 -> 8-bit 0..255: dark, mid, bright (Pillow's convert() gives 255s).
    assert values[0] == 0
    assert 100 < values[1] < 160
    assert values[2] >= 250


def test_cmyk_jpeg_converts_to_red(corpus: dict[str, Path]) -> None:
    r, g, b = load_rgb(corpus["cmyk_jpeg"]).getpixel((16, 16))
    assert r > 200 and g < 60 and b < 60


def test_palette_transparency_composited_on_white(corpus: dict[str, Path]) -> None:
    image = load_rgb(corpus["palette_transparent"])
    assert image.mode == "RGB"
    assert image.getpixel((24, 16)) == (255, 255, 255)  # transparent -> white
    assert image.getpixel((4, 16)) == (255, 0, 0)  # opaque red stays red


def test_animated_gif_gives_first_frame(corpus: dict[str, Path]) -> None:
    r, g, b = load_rgb(corpus["animated_gif"]).getpixel((12, 12))
    assert b > 200 and r < 60 and g < 60


def test_exif_orientation_applied(corpus: dict[str, Path]) -> None:
    assert probe(corpus["exif_rotated"]).width == 40  # stored size
    assert load_rgb(corpus["exif_rotated"]).size == (20, 40)  # upright


def test_non_ascii_file_name(corpus: dict[str, Path]) -> None:
    assert load_rgb(corpus["non_ascii_name"]).size == (64, 48)


def test_jpeg_draft_decodes_small_and_close(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "big.jpg", size=(2048, 1536), seed=5)
    small = load_rgb(path, max_size=256)
    assert max(small.size) == 256 and small.size == (256, 192)
    reference = load_rgb(path).resize(small.size, Image.Resampling.BICUBIC)
    diff = sum(abs(a - b) for a, b in zip(small.getpixel((200, 150)), reference.getpixel((200, 150)), strict=True))
    assert diff < 30


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="not found"):
        load_rgb(tmp_path / "nope.jpg")


def test_thumbnail_cached_by_fingerprint(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "p.jpg", size=(800, 600))
    thumb = ensure_thumbnail(path, "ab" * 16, tmp_path / "cache", size=128)
    assert thumb == thumbnail_path(tmp_path / "cache", "ab" * 16, 128)
    with Image.open(thumb) as im:
        assert im.size == (128, 96)
    mtime = thumb.stat().st_mtime_ns
    assert ensure_thumbnail(path, "ab" * 16, tmp_path / "cache", size=128).stat().st_mtime_ns == mtime
    assert not list(thumb.parent.glob("*.tmp"))


def test_fast_header_probe_agrees_with_pillow(tmp_path: Path, corpus: dict[str, Path]) -> None:
    from core.imaging import probe_head

    variants = {
        "baseline": dict(),
        "progressive": dict(progressive=True),
        "exif": dict(exif=Image.Exif().tobytes()),
        "huge_exif": dict(exif=b"Exif\x00\x00" + b"\x00" * 60_000),
        "restart_markers": dict(restart_marker_blocks=1),
        "greyscale": None,
    }
    paths = [corpus[k] for k in ("png16", "cmyk_jpeg", "palette_transparent", "exif_rotated", "non_ascii_name")]
    for name, options in variants.items():
        path = tmp_path / f"{name}.jpg"
        if options is None:
            Image.new("L", (33, 17), 90).save(path, "JPEG")
        else:
            write_jpeg(path, size=(123, 45), **options)
        paths.append(path)
    fast_hits = 0
    for path in paths:
        head = path.read_bytes()[:65536]
        expected = probe(path)  # Pillow's answer
        assert probe(path, head) == expected, path.name
        fast = probe_head(head)
        if fast is not None:
            fast_hits += 1
            assert fast == expected, path.name
    assert fast_hits >= len(paths) - 2  # only oddities fall back to Pillow
    with pytest.raises(ImageDecodeError, match="empty"):
        probe(corpus["zero_byte"], b"")
    with pytest.raises(ImageDecodeError, match="too large"):
        probe(corpus["bomb"], corpus["bomb"].read_bytes()[:65536])


def test_draft_size_decodes_reduced_but_not_below(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "big.jpg", size=(3000, 2000), seed=6)
    image = load_rgb(path, draft_size=384)
    # DCT scaling by 1/4 gives 750x500: the smallest scale keeping both sides >= 384.
    assert image.size == (750, 500)
