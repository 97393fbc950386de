"""The train/validation split shared by dataset export and retraining.

Every image is assigned to a split from its content fingerprint alone::

    u = blake2b(seed, fingerprint) read as a number in [0, 1)
    split = "validation" if u < val_ratio else "train"

That gives the properties both features rely on:

* **Deterministic** — the same library, ratio and seed always give the same split, on
  any machine and in any order of iteration (no random state, no counting).
* **Stable as the library grows** — an image's split depends on nothing but its own
  fingerprint, so adding or removing other photos never moves it to the other side.
  Raising the ratio only moves images from train to validation (the thresholds nest),
  never the other way.
* **Duplicate-safe** — byte-identical copies share a fingerprint, so they always land
  on the same side and a duplicate can never leak from train into validation.

**The test split.**  Training also keeps a *test* split that neither training nor the
choice of the best epoch sees (:func:`assign_split3`): the images at the other end of the
same position, ``u >= 1 - test_ratio``, are ``"test"`` - but only when at least
``min_test`` (:data:`MIN_TEST`) images land there, so a small library keeps its
train/validation split exactly as before and the numbers say plainly that there is no
test split.  Validation membership never changes; only training images move to test
(when the library grows past the threshold), and a higher test ratio only moves more of
them (the thresholds nest from the top).

Export and retraining must call :func:`assign_split3` with the same
ratios and seed to agree on which images are held out; do not re-implement it.  Each
decides on its own photos whether the test end holds enough for a test split (training:
the verified captions; export: what it exports), so validation always agrees and test
agrees whenever both have one.

What is hashed is the image's *split key*, ``images.split_key``.  The scanner sets it
when the library first sees a file: the key of its image data without metadata
(:func:`core.fingerprint.image_data_key`; JPEG, PNG, WebP), so a photo whose captions
were written into it — by CaptionDesk or another tool, before or after this library saw
it — lands on the same side in every library.  Where there is no such key (TIFF,
HEIC..., and rows from before this rule) it is the fingerprint as first seen: the
trigger of migration 0003 keeps that when the file is rewritten, and callers pass
``split_key or fingerprint``.  Either way a photo never changes sides because it was
edited.

**Duplicate groups.**  Resized, re-encoded or lightly cropped copies of a photo have
other keys, so on their own they would land on both sides about as often as two
strangers.  The duplicates job (:mod:`core.duplicates`) gives every member of a group
of near-duplicates the group's smallest split key (``images.duplicate_split_key``), and
every split reads :func:`split_key_sql` - that key first - so the whole group falls in
one split for training, evaluation and export alike.  A group that gains a member with a
smaller key moves as a whole (the price of never splitting it); ``eval`` reports a
version's training photos that it scores, and held-out photos with a near-duplicate
among them.
"""

from __future__ import annotations

import hashlib
import math

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
SPLITS = (TRAIN, VALIDATION)
#: Every split an export or a training run may have.
SPLITS3 = (TRAIN, VALIDATION, TEST)

#: The share of images at the top of the split position kept as the test split.
DEFAULT_TEST_RATIO = 0.1
#: Fewest images a test split needs; below it its score would be mostly noise, so there is none.
MIN_TEST = 30

#: The held-out share used when the caller does not choose one.
DEFAULT_VAL_RATIO = 0.1
DEFAULT_SEED = 0


def split_key_sql(images: str = "i") -> str:
    """SQL for the key an image's split hashes, in a query naming the images table *images*:
    its duplicate group's key, else its own split key, else its fingerprint."""
    return f"coalesce({images}.duplicate_split_key, {images}.split_key, {images}.fingerprint)"


def validate_val_ratio(val_ratio: float) -> float:
    """Return *val_ratio* if it is a usable share in [0, 1); raise ValueError otherwise.

    1.0 is refused: a dataset with nothing to train on is certainly a mistake.
    """
    ratio = float(val_ratio)
    if math.isnan(ratio) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"the validation ratio must be at least 0 and below 1, not {val_ratio}")
    return ratio


def split_position(fingerprint: str, seed: int = DEFAULT_SEED) -> float:
    """The image's fixed position in [0, 1) for this *seed*; uniform over fingerprints."""
    # The NUL separates seed and fingerprint, so seed 1 + "2ab.." never equals seed 12 + "ab..".
    message = f"{int(seed)}\x00{fingerprint}".encode()
    digest = hashlib.blake2b(message, digest_size=8, person=b"cd-split").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_split(fingerprint: str, val_ratio: float, seed: int = DEFAULT_SEED) -> str:
    """``"validation"`` for about *val_ratio* of all fingerprints, ``"train"`` for the rest."""
    return VALIDATION if split_position(fingerprint, seed) < val_ratio else TRAIN


def test_candidate(fingerprint: str, test_ratio: float, seed: int = DEFAULT_SEED) -> bool:
    """Whether the image is in the test end of the positions (``u >= 1 - test_ratio``)."""
    return test_ratio > 0 and split_position(fingerprint, seed) >= 1.0 - test_ratio


def assign_split3(fingerprint: str, val_ratio: float, seed: int = DEFAULT_SEED, *,
                  test_ratio: float = DEFAULT_TEST_RATIO, with_test: bool = True) -> str:
    """``"validation"`` exactly as :func:`assign_split`; of the rest ``"test"`` for positions
    ``>= 1 - test_ratio`` when *with_test* (the caller decided there are enough), else ``"train"``."""
    split = assign_split(fingerprint, val_ratio, seed)
    if split == TRAIN and with_test and test_candidate(fingerprint, test_ratio, seed):
        return TEST
    return split


def has_test_split(test_candidates: int, test_ratio: float, min_test: int | None = None) -> bool:
    """Whether *test_candidates* images at the test end make a test split (at least :data:`MIN_TEST`)."""
    return test_ratio > 0 and test_candidates >= (MIN_TEST if min_test is None else min_test)


def no_test_note(test_candidates: int, test_ratio: float, min_test: int | None = None) -> str:
    """Why there is no test split, in plain words."""
    if test_ratio <= 0:
        return "no test split (test ratio 0)"
    needed = MIN_TEST if min_test is None else min_test
    return f"no test split: only {test_candidates} photos would be in it and at least {needed} are needed"


def validate_test_ratio(val_ratio: float, test_ratio: float) -> float:
    """*test_ratio* if it is in [0, 1) and leaves room for training beside *val_ratio*; else ValueError."""
    ratio = float(test_ratio)
    if math.isnan(ratio) or not 0.0 <= ratio < 1.0 or val_ratio + ratio >= 1.0:
        raise ValueError(f"the test ratio must be at least 0 and leave training photos beside the validation "
                         f"ratio {val_ratio:g}, not {test_ratio}")
    return ratio
