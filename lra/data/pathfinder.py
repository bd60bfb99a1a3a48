"""Pathfinder ("snakes") generator and a reader for the LRA release layout (lra-spec.md §2.5, §8).

Generator
---------
A reimplementation of ``drewlinsley/pathfinder`` ``snakes2.py`` / ``snakes.py`` (Kim, Linsley et al.,
ICLR 2020) with the LRA per-resolution settings of ``lra_benchmarks/data/pathfinder.py``
(:data:`PATHFINDER_PARAMS`). One image: two target snakes of ``cl`` paddles (cl = 6 / 9 / 14 for
``baseline`` / ``9`` / ``14``) seeded ``seed_distance`` apart and grown with continuity-weighted
candidate sampling against an occupancy mask, then ``K // (cl // 3)`` distractor snakes of
``cl // 3`` paddles, then two circular markers: label 1 iff both markers sit on the same target snake.
Every paddle is drawn on an ``aa``-times blown-up canvas with PIL and Lanczos-downsampled; the saved
image is the min-max byte-scaled float canvas.

Three code paths share every primitive (paddle rendering, pasting, markers, byte scaling):

* :func:`_reference_image`: a literal full-canvas port of the original (every paddle drawn on a full
  canvas, full-canvas dilations with ``cv2.dilate`` semantics, float masks). Slow; a test oracle.
* :func:`_exact_image`: the same computation on local windows, with uint8 mask codes and dense
  per-(resolution, margin) tables (:class:`_FastSnakes`): rendered paddles per orientation, seed
  structuring elements, growth candidates per pivot, continuity weights. It draws the same numbers
  in the same order as the reference and is bit-identical to it (tests), and to the original 2019
  code (checked offline: the original run under Python 3 with OpenCV 4.8/5.0 and the old
  ``scipy.misc`` ``imresize``/``imsave`` semantics, both fed one legacy ``RandomState`` stream:
  780 images at 32 px, 60 at 64, 37 at 128, 6 at 256 px: identical bytes, labels and metadata).
* :func:`_lane_images` (the public API): the target pairs of many images are searched with many
  attempts side by side (:class:`_PairEngine`, "attempt streams" below) and their distractors are
  placed side by side (:class:`_DistractorEngine`), both vectorised with NumPy across lanes.
  Bit-identical to :func:`_attempts_image`, its one-image, one-attempt-at-a-time twin (tests).

Semantics kept on purpose, quirks included: ``ceil`` in ``translate``, the seed structuring element
drawn one pixel off centre and binarised with ``astype(uint8)`` (only mask pixels equal to 1.0
count), ``cv2.dilate``'s unreflected kernel, masks committed one paddle late (so a target paddle is
never tested against the other target snake's latest paddle and the two target curves can touch or
cross), snake 0's last paddle mask never committed, distractor contrast = a draw from the snake
contrast list (not times the paddle contrast), every retry count. The one exception is opt-in:
``PathfinderParams.cv2_border_quirk`` (see there; off by default because the release's statistics
show it was not active when the release was made).

Randomness: image ``i`` uses ``Generator(PCG64(SeedSequence(seed, spawn_key=(resolution,
contour_length, i))))`` for its label and margin and then, as a sequence of uniforms, for its
distractors and marker choice; a second stream (``spawn_key=(resolution, contour_length, i, 0)``)
feeds its target-pair attempts. Output does not depend on the number of worker processes or on the
chunking, and difficulties/resolutions get independent streams for one seed.

Deliberate deviations from the original
---------------------------------------
* Random numbers: per-image ``numpy.random.Generator`` streams instead of the global legacy state.
  In the public path an integer in [lo, hi) is ``lo + floor(u (hi - lo))`` of a uniform u (uniform to
  within 2^-53); snake 0's first orientation of a pair attempt is drawn among the angles that can
  seed at all; a distractor's seed pixel is found by rejection (uniform pixels until one is free,
  the full free list after 64 misses) instead of ``randint`` over the full list. Each of these leaves
  the distribution of images unchanged, not the random stream (see "attempt streams" and
  :func:`_distractors_uniform`); :func:`_exact_image` keeps the original's stream.
* ``cv2_border_quirk`` off by default (see above; ``True`` restores the 2019 behaviour bit for bit).
* Resampling uses the installed Pillow's Lanczos, as the original did through ``scipy.misc``; other
  Pillow versions may differ by a grey level at a few pixels. ``scipy.misc.imresize``/``imsave``
  semantics (byte-scale float input to 'L' first) are kept; the 2026 "NumPy 2" patch of the original
  repository resizes float images in mode 'F' instead, which is not what produced the release.
* ``cv2.dilate`` is replaced by an exact NumPy max filter (same anchor, no reflection, same border).
* The original retries the target pair forever; we raise after :data:`MAX_PAIR_ATTEMPTS`.
* Distractor length ``cl // 3`` and count ``K // dl`` are integer divisions at every resolution
  (§8.1; the LRA docstrings write ``/`` for 64/128/256, which the original loop cannot run under
  Python 3). The metadata row writes ``distractor_length`` as ``2`` at 32 px and ``2.0`` elsewhere,
  as in the release examples.
* The release's metadata ``.npy`` files are text; :func:`write_release_layout` writes that text format
  (the original code wrote a binary ``np.save`` array). PNG file names restart at ``sample_0.png`` in
  every batch folder (as in the release); the global index is ``batch * images_per_batch + i``.

Reader
------
:func:`read_release_layout` reads ``<root>/pathfinder{res}/<difficulty>/metadata/*.npy`` (text or
binary), resolves ``<difficulty>/<field0>/<field1>``, skips and counts zero-byte PNGs (the release's
``pathfinder32/curv_baseline/imgs/0/sample_172.png``); :func:`load_png` decodes one image and raises
``ValueError`` naming the file when it is corrupt, truncated, not 8-bit grey, or the wrong size.
"""
from __future__ import annotations

import io
import itertools
import math
import multiprocessing
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from lra.atomic import write_atomic

__all__ = [
    "DIFFICULTIES",
    "DIFFICULTY_FOLDERS",
    "PATHFINDER_PARAMS",
    "PathfinderDebug",
    "PathfinderParams",
    "generate_arrays",
    "generate_image",
    "iter_generate",
    "load_png",
    "read_release_layout",
    "write_release_layout",
]

DIFFICULTIES: dict[str, int] = {"baseline": 6, "9": 9, "14": 14}
DIFFICULTY_FOLDERS: dict[str, str] = {
    "baseline": "curv_baseline",
    "9": "curv_contour_length_9",
    "14": "curv_contour_length_14",
}
MAX_PAIR_ATTEMPTS = 10_000_000  # the original retries the target pair forever; we fail loudly instead
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class PathfinderParams:
    """Generator settings for one resolution (lra-spec.md §8.1; LRA ``data/pathfinder.py`` docstrings).

    ``distractor_budget`` is K in ``n_distr = K // (cl // 3)``. ``paddle_thickness * antialias_scale``
    must be an integer (the original raises otherwise). The retrial counts are the wrapper defaults:
    each counts *re*-tries, so ``max_paddle_retrial = 2`` means three draws.

    ``cv2_border_quirk``: the original seeds a snake by dilating the occupancy mask with a paddle-shaped
    kernel through ``cv2.dilate``, which returns -DBL_MAX at pixels whose whole kernel falls outside the
    image; the original then finds "no available coordinate" and the seed fails. With the kernel drawn
    one pixel off centre this kills 330 of 360 seed orientations at 32 px and 265 at 64 px (none at
    128/256 px with margin 3, 6 with margin 2). ``True`` reproduces that, bit for bit with the 2019 code
    run on OpenCV 4.8 / 5.0; ``False`` (default) treats such pixels as free (zero padding). Only
    ``False`` reproduces the release's statistics quoted in lra-spec.md §2.5 (45 % non-zero pixels at
    32 px; ``True`` gives 34 % and ~1.1 instead of ~4.6 distractor snakes per hard image), so the
    release was evidently not generated with the quirk active.
    """

    resolution: int
    padding: int
    antialias_scale: int
    paddle_margin_list: tuple[int, ...]
    paddle_length: int
    paddle_thickness: float
    marker_radius: float
    seed_distance: int
    continuity: float
    snake_contrast_list: tuple[float, ...]
    paddle_contrast_list: tuple[float, ...]
    distractor_budget: int
    max_distractor_contour_retrial: int = 4
    max_paddle_retrial: int = 2
    cv2_border_quirk: bool = False

    def distractor_length(self, contour_length: int) -> int:
        return contour_length // 3

    def num_distractor_snakes(self, contour_length: int) -> int:
        return self.distractor_budget // self.distractor_length(contour_length)


PATHFINDER_PARAMS: dict[int, PathfinderParams] = {
    32: PathfinderParams(32, padding=1, antialias_scale=2, paddle_margin_list=(1,), paddle_length=2,
                         paddle_thickness=0.5, marker_radius=1.5, seed_distance=7, continuity=1.0,
                         snake_contrast_list=(2.0,), paddle_contrast_list=(0.75,), distractor_budget=20),
    64: PathfinderParams(64, padding=1, antialias_scale=2, paddle_margin_list=(1,), paddle_length=5,
                         paddle_thickness=1.0, marker_radius=2.5, seed_distance=12, continuity=1.8,
                         snake_contrast_list=(0.8,), paddle_contrast_list=(1.0,), distractor_budget=22),
    128: PathfinderParams(128, padding=1, antialias_scale=2, paddle_margin_list=(2, 3), paddle_length=5,
                          paddle_thickness=1.5, marker_radius=3.0, seed_distance=20, continuity=1.8,
                          snake_contrast_list=(0.9,), paddle_contrast_list=(1.0,), distractor_budget=35),
    256: PathfinderParams(256, padding=22, antialias_scale=2, paddle_margin_list=(3,), paddle_length=5,
                          paddle_thickness=2.0, marker_radius=5.0, seed_distance=27, continuity=1.8,
                          snake_contrast_list=(1.0,), paddle_contrast_list=(1.0,), distractor_budget=30),
}


def _params(resolution: int) -> PathfinderParams:
    if resolution not in PATHFINDER_PARAMS:
        raise ValueError(f"pathfinder resolution {resolution!r} not in {sorted(PATHFINDER_PARAMS)}")
    return PATHFINDER_PARAMS[resolution]


def _difficulty(difficulty) -> str:
    key = str(difficulty)
    if key not in DIFFICULTIES:
        raise ValueError(f"pathfinder difficulty {difficulty!r} not in {sorted(DIFFICULTIES)} "
                         f"(folders {DIFFICULTY_FOLDERS})")
    return key


# ------------------------------------------------------------------------------------------------------
# Primitives (shared by the fast and the reference implementation)
# ------------------------------------------------------------------------------------------------------

def _bytescale(data: np.ndarray) -> np.ndarray:
    """Old ``scipy.misc.bytescale``: uint8 passes through; else min-max to 0..255, +0.5, truncate."""
    if data.dtype == np.uint8:
        return data
    cmin = data.min()
    cmax = data.max()
    cscale = cmax - cmin
    if cscale == 0:
        cscale = 1
    scale = float(255 - 0) / cscale
    bytedata = (data - cmin) * scale + 0
    return (bytedata.clip(0, 255) + 0.5).astype(np.uint8)


def _imresize_lanczos(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Old ``scipy.misc.imresize(arr, size, interp='lanczos')``: byte-scale to 'L', PIL Lanczos, uint8."""
    im = Image.fromarray(_bytescale(np.asarray(arr)))
    return np.asarray(im.resize((size[1], size[0]), resample=Image.Resampling.LANCZOS))


def _disk(radius: float) -> np.ndarray:
    """``generate_dilation_struct``: (2r+1)^2 binary kernel with x^2 + y^2 <= r^2."""
    r = int(radius)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    kernel = np.zeros((2 * r + 1, 2 * r + 1))
    kernel[x ** 2 + y ** 2 <= r ** 2] = 1
    return kernel


def _cv2_dilate(src: np.ndarray, kernel: np.ndarray, empty: float = -np.finfo(np.float64).max) -> np.ndarray:
    """``cv2.dilate(src, kernel.astype(uint8))`` in NumPy, as float64.

    OpenCV does not reflect the kernel: dst(p) = max over kernel cells k != 0 of src(p + k - anchor),
    anchor = (rows // 2, cols // 2). Cells falling outside the image are ignored; a pixel whose every
    cell falls outside gets ``empty`` (OpenCV: -DBL_MAX, its border value for dilation).
    """
    k = kernel.astype(np.uint8)
    ay, ax = k.shape[0] // 2, k.shape[1] // 2
    H, W = src.shape
    out = np.full((H, W), empty, dtype=np.float64)
    srcf = src.astype(np.float64)
    for ky, kx in zip(*np.nonzero(k)):
        dy, dx = int(ky) - ay, int(kx) - ax
        y0, y1 = max(0, -dy), min(H, H - dy)
        x0, x1 = max(0, -dx), min(W, W - dx)
        if y0 >= y1 or x0 >= x1:
            continue
        np.maximum(out[y0:y1, x0:x1], srcf[y0 + dy:y1 + dy, x0 + dx:x1 + dx], out=out[y0:y1, x0:x1])
    return out


def _translate(coord, orientation, dist) -> list[int]:
    """``translate_coord``: ceil (not round) of coord + dist * (sin, cos)."""
    y_displacement = float(dist) * np.sin(orientation)
    x_displacement = float(dist) * np.cos(orientation)
    return [int(np.ceil(coord[0] + y_displacement)), int(np.ceil(coord[1] + x_displacement))]


def _flip(orientation):
    """``flip_by_pi``."""
    return orientation + np.pi if orientation < 0 else orientation - np.pi


def _segment_patches(orientation, length: int, thickness: float, margin: int, aa: int,
                     large_struct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One paddle as in ``draw_line_n_mask`` before pasting: (line, mask) float64 (2R+1)^2 patches.

    R = length + ceil(thickness) + margin. The line is a white PIL line of width round(thickness*aa)
    on an 'F' canvas of side 2R*aa+1 from its centre towards ``orientation``, Lanczos-resized, /255;
    the mask is the blown line dilated by disk(margin*aa), resized, /255. Contrast is applied later.
    Float64 as in the 2019 code (``astype(np.float) / 255``); pasting into the original's 'F'
    canvases rounds to float32, which :func:`_place` and the fast path's caches reproduce.
    """
    if np.round(thickness * aa) - thickness * aa != 0.0:
        raise ValueError(f"paddle thickness {thickness} * antialias scale {aa} must be an integer")
    R = length + int(np.ceil(thickness)) + margin
    blown_shape = R * 2 * aa + 1
    blown_center = R * aa
    blown_thickness = int(np.round(thickness * aa))
    blown_head = _translate([blown_center, blown_center], orientation, length * aa)
    blown = Image.new("F", (blown_shape, blown_shape), "black")
    ImageDraw.Draw(blown).line([(blown_center, blown_center), (blown_head[1], blown_head[0])],
                               fill="white", width=blown_thickness)
    blown_arr = np.array(blown)
    shape = (2 * R + 1, 2 * R + 1)
    line = _imresize_lanczos(blown_arr, shape).astype(np.float64) / 255
    blown_mask = _cv2_dilate(blown_arr, large_struct).astype(np.uint8)
    mask = _imresize_lanczos(blown_mask, shape).astype(np.float64) / 255
    return line, mask


def _paste_ranges(start, R: int, H: int, W: int):
    """``draw_line_n_mask``'s clipping of a (2R+1)^2 patch centred at ``start``: (canvas, patch) slices."""
    S = 2 * R + 1
    v0, v1 = start[0] - R, start[0] + R
    h0, h1 = start[1] - R, start[1] + R
    cv = slice(max(v0, 0), min(v1, H - 1) + 1)
    ch = slice(max(h0, 0), min(h1, W - 1) + 1)
    pv = slice(max(0, -v0), S - 1 - max(0, v1 - (H - 1)) + 1)
    ph = slice(max(0, -h0), S - 1 - max(0, h1 - (W - 1)) + 1)
    return (cv, ch), (pv, ph)


def _place(patch: np.ndarray, start, R: int, H: int, W: int) -> np.ndarray:
    """A full (H, W) float32 canvas holding ``patch`` centred at ``start`` (the original's pasting)."""
    canvas = np.zeros((H, W), dtype=np.float32)
    (cv, ch), (pv, ph) = _paste_ranges(start, R, H, W)
    canvas[cv, ch] = patch[pv, ph]
    return canvas


def _circle_full(H: int, W: int, coordinate, radius: float, aa: int) -> np.ndarray:
    """``draw_circle``: binary disk on the aa-upscaled canvas, Lanczos-resized to (H, W), uint8."""
    image = np.zeros((H * aa, W * aa))
    y, x = np.ogrid[-coordinate[0] * aa:(H - coordinate[0]) * aa, -coordinate[1] * aa:(W - coordinate[1]) * aa]
    image[x ** 2 + y ** 2 <= (radius * aa) ** 2] = 1
    return _imresize_lanczos(image, (H, W))


def _circle_local(H: int, W: int, coordinate, radius: float, aa: int):
    """The non-zero part of :func:`_circle_full` computed on a crop: (rows slice, cols slice, patch).

    PIL resamples each output pixel from a window of ``3 * aa`` input pixels (Lanczos, a = 3) with
    weights that depend only on the offset inside the window, renormalised where the window meets
    the image edge. A crop whose edges are either the image's edges or at least ``pad`` output pixels
    away from the kept part, and whose offset is a multiple of ``aa``, therefore gives the same bytes.
    """
    pad = 6  # output pixels; the Lanczos support is 3
    r = int(np.ceil(radius)) + pad
    cy, cx = int(coordinate[0]), int(coordinate[1])
    y0, y1 = max(0, cy - r), min(H, cy + r + 1)
    x0, x1 = max(0, cx - r), min(W, cx + r + 1)
    iy0, iy1 = max(0, y0 - pad), min(H, y1 + pad)  # crop in output units; multiply by aa below
    ix0, ix1 = max(0, x0 - pad), min(W, x1 + pad)
    yy, xx = np.ogrid[iy0 * aa - cy * aa:iy1 * aa - cy * aa, ix0 * aa - cx * aa:ix1 * aa - cx * aa]
    crop = np.zeros(((iy1 - iy0) * aa, (ix1 - ix0) * aa), dtype=np.uint8)
    crop[xx ** 2 + yy ** 2 <= (radius * aa) ** 2] = 255  # bytescale of a 0/1 image (the disk is never empty)
    out = np.asarray(Image.fromarray(crop).resize((ix1 - ix0, iy1 - iy0), resample=Image.Resampling.LANCZOS))
    return slice(y0, y1), slice(x0, x1), out[y0 - iy0:y1 - iy0, x0 - ix0:x1 - ix0]


def _metadata_row(params: PathfinderParams, contour_length: int, label: int, margin: int, index: int,
                  images_per_batch: int) -> list[str]:
    """The release's 11 metadata fields for global image ``index`` (§2.5)."""
    batch, nimg = divmod(index, images_per_batch)
    dl = params.distractor_length(contour_length)
    thickness = params.paddle_thickness
    return [
        f"imgs/{batch}", f"sample_{nimg}.png", str(nimg), str(int(label)),
        str(float(params.continuity)), str(contour_length),
        str(dl) if params.resolution == 32 else str(float(dl)),
        str(params.paddle_length),
        str(int(thickness)) if float(thickness).is_integer() else str(thickness),
        str(margin), str(len(params.paddle_contrast_list)),
    ]


@dataclass
class PathfinderDebug:
    """What the generator knows about one image, for tests and inspection.

    ``origin``/``terminal``: marker centres (row, col). ``origin_snake``/``terminal_snake``: the target
    snake (0 or 1) each marker sits on; label == (origin_snake == terminal_snake). ``snake_strokes``:
    (2, H, W) uint8, each target snake's paddles alone under the final image's byte scaling (what that
    snake contributes to the PNG, before distractors and markers). ``num_distractors``: distractor
    snakes drawn. ``pair_attempts``: tries needed to place the target pair.
    """

    origin: tuple[int, int]
    terminal: tuple[int, int]
    origin_snake: int
    terminal_snake: int
    snake_strokes: np.ndarray
    margin: int
    num_distractors: int
    pair_attempts: int


def _image_rng(seed: int, resolution: int, contour_length: int, index: int) -> np.random.Generator:
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(resolution), int(contour_length), int(index)))
    return np.random.Generator(np.random.PCG64(ss))


def _contrast_means(snake_contrast_list, rng) -> list[float]:
    """``snake_contrast_list * 2``, shuffled, first two (no draw when all values are equal)."""
    means = list(snake_contrast_list) * 2
    if len(set(means)) > 1:
        means = [means[i] for i in rng.permutation(len(means))]
    return means[:2]


# ------------------------------------------------------------------------------------------------------
# Fast implementation: uint8 mask codes, dense per-(resolution, margin) tables, local windows
# ------------------------------------------------------------------------------------------------------
#
# Every mask value the original produces is float32(k / 255) for an integer code k (paddle masks are
# Lanczos output / 255 stored on float32 canvases; the border is 1.0 = code 255), so masks are held as
# uint8 codes and every float test on them is replaced by an exactly equivalent integer test (checked
# at import below). Canvases carry a ``PAD``-pixel frame that is never written, so a window or a disk
# around any in-canvas pixel can be gathered without bounds checks (values outside read as 0, which is
# what "ignored" means for a max filter of non-negative values).

_CODE_VALUE = np.array([np.float32(np.float64(k) / 255) for k in range(256)], dtype=np.float64)
_CODE_FREE = 1 - _CODE_VALUE  # ``1 - dilated_mask`` for a mask value of code k
_REJECT_SUM = 459  # value(a) + value(b) >= 1.8  <=>  a + b >= 459
_OCCUPIED = 76  # ceil(value(k) - 0.3) != 0  <=>  k > 76
_sums = np.add.outer(np.arange(256), np.arange(256))
if not (np.array_equal(_CODE_VALUE[:, None] + _CODE_VALUE[None, :] >= 1.8, _sums >= _REJECT_SUM)
        and np.array_equal(np.ceil(_CODE_VALUE - 0.3) != 0, np.arange(256) > _OCCUPIED)):
    raise RuntimeError("mask code arithmetic does not reproduce the original's float tests")
del _sums


class _Struct:
    """Seed structuring element for one orientation: shifted-OR slices and the cv2 -inf failure flag."""

    __slots__ = ("slices", "fails", "offsets")

    def __init__(self, slices, fails, offsets):
        self.slices = slices
        self.fails = fails
        self.offsets = offsets  # (dy, dx) of every kernel cell relative to the anchor


class _FastSnakes:
    """Tables and caches for one (resolution, margin); the single-attempt version of every step.

    Orientation ids (oid): ``g * g`` integer offsets (dy, dx) around a pivot (candidate directions,
    ``arctan2(dy, dx)``), then the 360 integer seed degrees (``deg * pi / 180``). ``draw_theta[oid]``
    is the orientation a paddle is drawn with: candidates point back to their pivot (``flip_by_pi``),
    seeds as drawn. Tables hold, per oid, the paddle mask codes as (a) the pixels that can fail the
    acceptance test ``max(mask + m) < 1.8`` with their thresholds and (b) all non-zero pixels; per
    pivot in [-E, H + E)^2 (pivots may fall up to m + 1 pixels outside), the de-duplicated candidates
    in ``np.unique`` order; per (last oid, candidate oid), the continuity weight.
    """

    def __init__(self, params: PathfinderParams, margin: int):
        p = self.p = params
        self.m = m = margin
        self.H = self.W = H = W = params.resolution
        self.L = L = params.paddle_length
        self.aa = params.antialias_scale
        self.R = R = L + int(np.ceil(params.paddle_thickness)) + margin
        self.large_struct = _disk(margin * self.aa)
        self.step = r = L + margin
        deg_per_pixel = 360.0 / (2 * r * np.pi)
        samples = np.arange(0, 360, deg_per_pixel) * np.pi / 180
        self.circle_sin = r * np.sin(samples)
        self.circle_cos = r * np.cos(samples)
        self._segments: dict = {}
        self._scaled: dict = {}
        self._structs: dict = {}
        self._markers: dict = {}

        self.PAD = PAD = R + 1
        self.Wp = Wp = W + 2 * PAD
        self.size = (H + 2 * PAD) * Wp

        # orientation table
        self.g = g = 2 * r + 3
        dy, dx = np.meshgrid(np.arange(-r - 1, r + 2), np.arange(-r - 1, r + 2), indexing="ij")
        theta_off = np.arctan2(dy.ravel(), dx.ravel())
        degs = np.arange(-180, 180)
        theta_seed = degs * np.pi / 180
        self.theta = np.concatenate([theta_off, theta_seed])
        self.sin = np.sin(self.theta)
        self.cos = np.cos(self.theta)
        self._sin, self._cos = self.sin.tolist(), self.cos.tolist()
        self._lined: dict = {}
        self.seed_oid0 = g * g
        draw_off = np.where(theta_off < 0, theta_off + np.pi, theta_off - np.pi)
        self.draw_theta = np.concatenate([draw_off, theta_seed])
        rev = np.where(theta_seed + np.pi < np.pi, theta_seed + np.pi, theta_seed - np.pi)
        self.rev_sin, self.rev_cos = np.sin(rev), np.cos(rev)
        self._rev_sin, self._rev_cos = self.rev_sin.tolist(), self.rev_cos.tolist()
        ad = np.abs(theta_off[None, :] - self.theta[:, None])  # (last oid, candidate oid)
        delta = np.minimum(ad, 2 * np.pi - ad)
        delta = np.minimum(delta * params.continuity, 0.5 * np.pi)
        self.wtab = np.maximum(np.cos(delta), 0) ** 2
        # Weights of candidates at or beyond the continuity cut-off are cos(pi/2)^2 ~ 4e-33, not 0.
        # ``wtab_sig`` sets them to 0 so their occupancy need not be looked up: each such pmf term is
        # < 1e-31, and any partial sum holding a non-zero in-range term exceeds the sum of all of them
        # by more than 2^54 (checked here), so the total, the ``total < 1e-4`` test and every test
        # ``cmf - u > 0`` come out bit-identical -- except for a draw of exactly u = 0, which both
        # ``extend`` and :func:`_extend_lanes` redo with every candidate.
        tiny = self.wtab <= 1e-30
        # one extra zero column: the oid of empty candidate slots (``cand_oid`` pads with g * g)
        self.wtab_sig = np.concatenate([np.where(tiny, 0.0, self.wtab), np.zeros((len(self.theta), 1))], axis=1)
        if tiny.any() and (~tiny).any() and \
                self.wtab[~tiny].min() * _CODE_FREE[254] < 2.0 ** 54 * 128 * self.wtab[tiny].max():
            raise RuntimeError("continuity weights too close to the cut-off for the lane engine's shortcut")

        # candidates for every pivot
        self.E = E = m + 2
        self.G = G = H + 2 * E
        py = np.repeat(np.arange(-E, H + E), G)
        px = np.tile(np.arange(-E, W + E), G)
        ys = py[:, None] + self.circle_sin[None, :]
        xs = px[:, None] + self.circle_cos[None, :]
        cy, cx = ys.astype(int), xs.astype(int)
        oob = (ys >= H) | (ys < 0) | (xs >= W) | (xs < 0)
        big = np.iinfo(np.int64).max
        key = np.where(oob, big, cy * W + cx)
        key.sort(axis=1)
        valid = np.ones_like(key, dtype=bool)
        valid[:, 1:] = key[:, 1:] != key[:, :-1]
        valid &= key != big
        n = valid.sum(axis=1)
        nmax = int(n.max())
        if nmax > 128:
            raise ValueError("more than 128 growth candidates per pivot: pairwise-sum emulation does not apply")
        order = np.argsort(~valid, axis=1, kind="stable")[:, :nmax]
        ck = np.take_along_axis(key, order, axis=1)
        live = np.arange(nmax)[None, :] < n[:, None]
        ck = np.where(live, ck, 0)
        ccy, ccx = ck // W, ck % W
        ddy, ddx = ccy - py[:, None], ccx - px[:, None]
        if np.abs(ddy[live]).max() > r + 1 or np.abs(ddx[live]).max() > r + 1:
            raise RuntimeError("candidate offset outside the orientation table")
        self.nmax = nmax
        self.cand_n = n
        self._cand_n = n.tolist()
        self.cand_oid = np.where(live, (ddy + r + 1) * g + (ddx + r + 1), g * g)
        self.cand_flat = np.where(live, (ccy + PAD) * Wp + (ccx + PAD), 0)

        # paddle mask codes per drawable oid
        used = np.zeros(g * g + 360, dtype=bool)
        used[np.unique(self.cand_oid[live])] = True
        used[g * g:] = True
        wy, wx = np.meshgrid(np.arange(-R, R + 1), np.arange(-R, R + 1), indexing="ij")
        wy, wx = wy.ravel(), wx.ravel()
        codes = np.zeros((len(used), (2 * R + 1) ** 2), dtype=np.int64)
        for oid in np.flatnonzero(used):
            codes[oid] = np.rint(self.segment(self.draw_theta[oid])[1].astype(np.float64) * 255).ravel()
        core = codes >= _REJECT_SUM - 255  # only these pixels can fail the acceptance test
        sup = codes > 0
        cmax, smax = max(1, int(core.sum(1).max())), max(1, int(sup.sum(1).max()))
        self.core_off = np.zeros((len(used), cmax), dtype=np.int64)
        self.core_thr = np.full((len(used), cmax), 10_000, dtype=np.int64)
        # padding entries of the support point at a pad pixel outside every window: never in the canvas,
        # never a real target of the same scatter
        self.sup_dy = np.full((len(used), smax), -(R + 1), dtype=np.int64)
        self.sup_dx = np.full((len(used), smax), -(R + 1), dtype=np.int64)
        self.sup_code = np.zeros((len(used), smax), dtype=np.uint8)
        flat_off = wy * Wp + wx
        for oid in np.flatnonzero(used):
            c = np.flatnonzero(core[oid])
            self.core_off[oid, :len(c)] = flat_off[c]
            self.core_thr[oid, :len(c)] = _REJECT_SUM - codes[oid, c]
            s = np.flatnonzero(sup[oid])
            self.sup_dy[oid, :len(s)], self.sup_dx[oid, :len(s)] = wy[s], wx[s]
            self.sup_code[oid, :len(s)] = codes[oid, s]
        self.sup_off = self.sup_dy * Wp + self.sup_dx
        sy, sx = np.nonzero(_disk(m))
        self.disk_off = ((sy - m) * Wp + (sx - m)).astype(np.int64)

        # the empty target mask: padding border = 1.0
        template = np.zeros((H + 2 * PAD, Wp), dtype=np.uint8)
        inner = template[PAD:PAD + H, PAD:PAD + W]
        pd = p.padding
        inner[:pd, :] = 255
        inner[-pd:, :] = 255
        inner[:, :pd] = 255
        inner[:, -pd:] = 255
        self.template = template.ravel()

        # snake 0's seed: per degree, the free pixels (row-major) of the seed-distance-lined empty mask
        b = max(2 * p.seed_distance, pd)
        occ = np.zeros((H, W), dtype=bool)
        occ[:b, :] = occ[H - b:, :] = True
        occ[:, :b] = occ[:, W - b:] = True
        frees = []
        for deg in degs:
            st = self.struct(deg * np.pi / 180)
            if p.cv2_border_quirk and st.fails:
                frees.append(np.zeros(0, dtype=np.int64))
                continue
            dil = np.zeros((H, W), dtype=bool)
            for dst, src in st.slices:
                np.logical_or(dil[dst], occ[src], out=dil[dst])
            frees.append(np.flatnonzero(~dil))
        # per degree, the seed element's offsets in the padded flat layout (for the distractor seed's
        # rejection test; padded by repeating the first offset)
        offs = [[dy * Wp + dx for (dy, dx) in self.struct(deg * np.pi / 180).offsets] for deg in degs]
        self.seed_kcnt = np.array([len(o) for o in offs], dtype=np.int64)
        self.seed_koff = np.zeros((360, max(1, int(self.seed_kcnt.max()))), dtype=np.int64)
        for i, o in enumerate(offs):
            if o:
                self.seed_koff[i, :] = o[0]
                self.seed_koff[i, :len(o)] = o
        self.seed_count = np.array([f.size for f in frees], dtype=np.int64)
        self.seed_free = np.zeros((360, max(1, int(self.seed_count.max()))), dtype=np.int32)
        for i, f in enumerate(frees):
            self.seed_free[i, :f.size] = f
        self.good = degs[self.seed_count > 0].astype(np.int64)
        if self.good.size == 0:
            raise RuntimeError(f"pathfinder{H} margin {m}: no orientation can seed the target snakes")

    # -- caches keyed on exact inputs -----------------------------------------------------------------
    def segment(self, orientation):
        """(float64 line patch, float32 mask patch as it lands on the original's 'F' canvas)."""
        hit = self._segments.get(orientation)
        if hit is None:
            line, mask = _segment_patches(orientation, self.L, self.p.paddle_thickness, self.m, self.aa,
                                          self.large_struct)
            hit = self._segments[orientation] = (line, mask.astype(np.float32))
        return hit

    def line(self, orientation, contrast):
        """The line patch times ``contrast`` (float64), rounded to float32 as on the 'F' canvas."""
        key = (orientation, contrast)
        hit = self._scaled.get(key)
        if hit is None:
            line = self.segment(orientation)[0]
            if contrast != 1.0:
                line = line * contrast
            hit = self._scaled[key] = line.astype(np.float32)
        return hit

    def struct(self, orientation) -> _Struct:
        """Seed element: the mask of a paddle drawn from (L+m+1, L+m+1) on a (2(L+m)+1)^2 canvas, pixels
        equal to 1.0 (``astype(uint8)``), applied unreflected around the canvas centre (cv2)."""
        hit = self._structs.get(orientation)
        if hit is None:
            L, m, H, W = self.L, self.m, self.H, self.W
            side = (L + m) * 2 + 1
            k = _place(self.segment(orientation)[1], [L + m + 1, L + m + 1], self.R, side, side).astype(np.uint8)
            a = side // 2
            slices = []
            offsets = [(int(ky) - a, int(kx) - a) for ky, kx in zip(*np.nonzero(k))]
            covered = np.zeros((H, W), dtype=bool)
            for dy, dx in offsets:
                y0, y1 = max(0, -dy), min(H, H - dy)
                x0, x1 = max(0, -dx), min(W, W - dx)
                if y0 >= y1 or x0 >= x1:
                    continue
                covered[y0:y1, x0:x1] = True
                slices.append(((slice(y0, y1), slice(x0, x1)), (slice(y0 + dy, y1 + dy), slice(x0 + dx, x1 + dx))))
            hit = self._structs[orientation] = _Struct(slices, not covered.all(), offsets)
        return hit

    def marker(self, cy: int, cx: int):
        """:func:`_circle_local` at (cy, cx), cached by distance to the borders (beyond which it is
        translation invariant): (y0, y1, x0, x1, uint8 patch)."""
        H, W = self.H, self.W
        q = int(np.ceil(self.p.marker_radius)) + 13
        key = (min(cy, q), min(H - 1 - cy, q), min(cx, q), min(W - 1 - cx, q))
        hit = self._markers.get(key)
        if hit is None:
            rs, cs, patch = _circle_local(H, W, (cy, cx), self.p.marker_radius, self.aa)
            hit = self._markers[key] = (rs.start - cy, rs.stop - cy, cs.start - cx, cs.stop - cx, patch)
        y0, y1, x0, x1, patch = hit
        return cy + y0, cy + y1, cx + x0, cx + x1, patch

    # -- one attempt ------------------------------------------------------------------------------------
    def seed(self, mc, rng, lined_border: int, stop_with_availability, first_choices=None):
        """``seed_snake`` / snake 0 of ``initialize_two_seeds`` on mask codes ``mc``.

        Returns (tail y, tail x, pivot y, pivot x, oid) or None. ``first_choices``: degrees the first
        trial draws from instead of [-180, 180) (attempt-stream mode, see :class:`_PairEngine`).
        """
        H, W, L, m, PAD = self.H, self.W, self.L, self.m, self.PAD
        canvas = mc.reshape(H + 2 * PAD, self.Wp)[PAD:PAD + H, PAD:PAD + W]
        trial = 0
        while trial <= self.p.max_paddle_retrial:
            if trial == 0 and first_choices is not None:
                deg = first_choices[rng.integers(0, len(first_choices))]
            else:
                deg = rng.integers(-180, 180)
            di = int(deg) + 180
            oid = self.seed_oid0 + di
            if self.p.cv2_border_quirk and self.struct(self.theta[oid]).fails:  # cv2's -inf: nothing free
                return None
            occ = canvas > _OCCUPIED
            if stop_with_availability is not None and \
                    float(H * W - np.count_nonzero(occ)) / (H * W) < stop_with_availability:
                return None
            border = self._lined.get(lined_border)
            if border is None:
                b = lined_border
                border = np.zeros((H, W), dtype=bool)
                border[:b, :] = border[H - b:, :] = border[:, :b] = border[:, W - b:] = True
                self._lined[lined_border] = border
            occ |= border
            dil = np.zeros((H, W), dtype=bool)
            for dst, src in self.struct(self.theta[oid]).slices:
                np.logical_or(dil[dst], occ[src], out=dil[dst])
            free = np.flatnonzero(~dil)
            if free.size == 0:
                return None
            idx = int(free[rng.integers(0, free.size)])
            ty, tx = divmod(idx, W)
            # Python float arithmetic on the same doubles = the original's NumPy scalar arithmetic
            hy = math.ceil(ty + float(L) * self._sin[oid])
            hx = math.ceil(tx + float(L) * self._cos[oid])
            py = math.ceil(hy + float(L + m) * self._rev_sin[di])
            px = math.ceil(hx + float(L + m) * self._rev_cos[di])
            if not (0 <= hy < H and 0 <= hx < W and 0 <= py < H and 0 <= px < W):
                trial += 1
                continue
            return ty, tx, py, px, oid
        return None

    def extend(self, mc, py: int, px: int, last_oid: int, rng):
        """``extend_snake`` up to the acceptance test: (head y, head x, pivot y, pivot x, oid) or None.

        Candidates past the continuity cut-off (weight ~4e-33, see ``wtab_sig``) get pmf 0 instead of
        ~1e-33: the total and every test ``cmf - u > 0`` are bit-identical unless u == 0 exactly,
        which is redone with all candidates. With no candidate inside the cut-off the original's total
        is < 1e-31 and the step fails, as here.
        """
        p, E = self.p, self.E
        D = float(self.L + 2 * self.m)
        ny = math.ceil(py + D * self._sin[last_oid])
        nx = math.ceil(px + D * self._cos[last_oid])
        if not (-E <= ny < self.H + E and -E <= nx < self.W + E):
            raise RuntimeError("pivot outside the candidate table")
        P = (ny + E) * self.G + (nx + E)
        n = self._cand_n[P]
        if n == 0:
            return None
        oids = self.cand_oid[P, :n]
        flat = self.cand_flat[P, :n]
        w = self.wtab_sig[last_oid, oids]
        nz = np.flatnonzero(w)
        if nz.size == 0:
            return None
        pmf = np.zeros(n)
        pmf[nz] = _CODE_FREE[mc[flat[nz, None] + self.disk_off].max(axis=1)] * w[nz]
        total = np.sum(pmf)
        if total < 1e-4:
            return None
        cmf = np.cumsum(pmf / total)
        for _ in range(p.max_paddle_retrial + 1):
            u = rng.random()
            if u == 0:  # the first candidate with any free space, weights past the cut-off included
                i = int(np.argmax(_CODE_FREE[mc[flat[:, None] + self.disk_off].max(axis=1)] > 0))
            else:
                i = int(np.argmax(cmf - u > 0))
            oid = oids[i]
            start = flat[i]
            if not (mc[start + self.core_off[oid]] >= self.core_thr[oid]).any():
                hy, hx = divmod(int(start), self.Wp)
                return hy - self.PAD, hx - self.PAD, ny, nx, int(oid)
        return None

    def commit(self, mc, y: int, x: int, oid: int) -> None:
        """mask = max(mask, paddle mask of ``oid`` pasted at (y, x)), clipped to the canvas."""
        R, H, W = self.R, self.H, self.W
        pos = (y + self.PAD) * self.Wp + (x + self.PAD) + self.sup_off[oid]
        new = np.maximum(mc[pos], self.sup_code[oid])
        if not (R <= y < H - R and R <= x < W - R):
            yy, xx = y + self.sup_dy[oid], x + self.sup_dx[oid]
            new = np.where((yy >= 0) & (yy < H) & (xx >= 0) & (xx < W), new, mc[pos])
        mc[pos] = new

    def commit_lanes(self, mflat, base, y, x, oid) -> None:
        """:meth:`commit` for many lanes at once (``base``: each lane's offset in ``mflat``)."""
        R, H, W = self.R, self.H, self.W
        pos = self.sup_off[oid].T + (base + (y + self.PAD) * self.Wp + (x + self.PAD))[None, :]
        old = mflat[pos]
        new = np.maximum(old, self.sup_code[oid].T)
        edge = np.flatnonzero(~((y >= R) & (y < H - R) & (x >= R) & (x < W - R)))
        if edge.size:
            yy = y[None, edge] + self.sup_dy[oid[edge]].T
            xx = x[None, edge] + self.sup_dx[oid[edge]].T
            new[:, edge] = np.where((yy >= 0) & (yy < H) & (xx >= 0) & (xx < W), new[:, edge], old[:, edge])
        mflat[pos] = new

    def draw(self, image, y: int, x: int, oid: int, contrast) -> None:
        """image = max(image, paddle line of ``oid`` times ``contrast`` pasted at (y, x))."""
        R = self.R
        line = self.line(self.draw_theta[oid], contrast)
        if R <= y < self.H - R and R <= x < self.W - R:
            win = image[y - R:y + R + 1, x - R:x + R + 1]
            np.maximum(win, line, out=win)
            return
        (cv, ch), (pv, ph) = _paste_ranges((y, x), R, self.H, self.W)
        win = image[cv, ch]
        np.maximum(win, line[pv, ph], out=win)


_FAST_CACHE: dict[tuple[PathfinderParams, int], _FastSnakes] = {}


def _fast(params: PathfinderParams, margin: int) -> _FastSnakes:
    key = (params, margin)
    hit = _FAST_CACHE.get(key)
    if hit is None:
        hit = _FAST_CACHE[key] = _FastSnakes(params, margin)
    return hit


def _fast_two_snakes(fs: _FastSnakes, contour_length: int, rng, first_choices=None):
    """``two_snakes`` for one attempt: a pair record (see :func:`_pair_images`) or None on failure."""
    p, H, W, L, m = fs.p, fs.H, fs.W, fs.L, fs.m
    means = _contrast_means(p.snake_contrast_list, rng)
    pcl = p.paddle_contrast_list
    n_contrasts = len(pcl)
    mc = fs.template.copy()
    c0 = pcl[rng.integers(0, n_contrasts) if n_contrasts > 1 else 0] * means[0]
    seeded = fs.seed(mc, rng, 2 * p.seed_distance, None, first_choices)
    if seeded is None:
        return None
    ty, tx, py0, px0, oid0 = seeded
    # snake 1: seed_distance from snake 0's tail, bounds checks only
    c1 = pcl[rng.integers(0, n_contrasts) if n_contrasts > 1 else 0] * means[1]
    trial = 0
    while trial <= p.max_paddle_retrial:
        di = int(rng.integers(-180, 180)) + 180
        phi = rng.integers(0, 360) * np.pi / 180
        y2 = int(np.round(ty + (p.seed_distance * np.sin(phi))))
        x2 = int(np.round(tx + (p.seed_distance * np.cos(phi))))
        oid1 = fs.seed_oid0 + di
        hy = int(np.ceil(y2 + float(L) * fs.sin[oid1]))
        hx = int(np.ceil(x2 + float(L) * fs.cos[oid1]))
        py1 = int(np.ceil(hy + float(L + m) * fs.rev_sin[di]))
        px1 = int(np.ceil(hx + float(L + m) * fs.rev_cos[di]))
        if not (0 <= hy < H and 0 <= hx < W and 0 <= py1 < H and 0 <= px1 < W):
            trial += 1
            continue
        break
    if trial > p.max_paddle_retrial:
        return None
    pending = [(ty, tx, oid0), (y2, x2, oid1)]  # paddle masks are committed one step late
    pivots = [(py0, px0), (py1, px1)]
    last = [oid0, oid1]
    terminal = [[0, 0], [0, 0]]
    draws = []
    for _ in range(contour_length - 1):
        contrast = pcl[rng.integers(0, n_contrasts)] if n_contrasts > 0 else pcl[0]
        for k in range(2):
            got = fs.extend(mc, *pivots[k], last[k], rng)
            if got is None:
                return None
            hy, hx, ny, nx, oid = got
            fs.commit(mc, *pending[k])
            pending[k] = (hy, hx, oid)
            pivots[k], last[k], terminal[k] = (ny, nx), oid, [hy, hx]
            draws.append((k, hy, hx, oid, contrast * means[k]))
    fs.commit(mc, *pending[1])  # snake 0's last paddle mask is never committed (original quirk)
    return dict(seeds=[(ty, tx, oid0, c0), (y2, x2, oid1, c1)], draws=draws, terminal=terminal, mask=mc)


def _pair_images(fs: _FastSnakes, rec: dict) -> list[np.ndarray]:
    """The two target snakes' float images of a pair record (paddles are max-pasted, order-free)."""
    images = [np.zeros((fs.H, fs.W)), np.zeros((fs.H, fs.W))]
    for k, (y, x, oid, c) in enumerate(rec["seeds"]):
        fs.draw(images[k], y, x, oid, c)
    for k, y, x, oid, c in rec["draws"]:
        fs.draw(images[k], y, x, oid, c)
    return images


def _fast_distractors(fs: _FastSnakes, image, mc, contour_length: int, rng) -> int:
    """``make_many_snakes`` for the distractors (incomplete sets allowed); returns snakes drawn."""
    p = fs.p
    contrasts = p.snake_contrast_list
    n_contrasts = len(contrasts)
    n_segments = p.distractor_length(contour_length)
    drawn = 0
    for _ in range(p.num_distractor_snakes(contour_length)):
        for _retry in range(p.max_distractor_contour_retrial + 1):
            contrast = contrasts[rng.integers(0, n_contrasts)] if n_contrasts > 0 else contrasts[0]
            seeded = fs.seed(mc, rng, 1, 0.01)
            if seeded is None:
                continue
            ty, tx, py, px, oid = seeded
            draws = [(ty, tx, oid, contrast)]
            pending = (ty, tx, oid)
            backup = mc.copy()
            ok = True
            for _seg in range(n_segments - 1):
                contrast = contrasts[rng.integers(0, n_contrasts)] if n_contrasts > 0 else contrasts[0]
                got = fs.extend(mc, py, px, oid, rng)
                if got is None:
                    ok = False
                    break
                hy, hx, py, px, oid = got
                draws.append((hy, hx, oid, contrast))
                fs.commit(mc, *pending)
                pending = (hy, hx, oid)
            if not ok:
                mc[:] = backup
                continue
            fs.commit(mc, *pending)
            for y, x, o, c in draws:
                fs.draw(image, y, x, o, c)
            drawn += 1
            break
    return drawn


def _finish(params: PathfinderParams, image: np.ndarray, label: int, origin_tips, terminal_tips, rng,
            marker_fn):
    """Markers (``origin_idx`` draw, circles). Returns (float image, origin, terminal, snake indices)."""
    origin_idx = int(rng.integers(0, 2))
    terminal_idx = origin_idx if label == 1 else 1 - origin_idx
    origin = origin_tips[origin_idx]
    terminal = terminal_tips[terminal_idx]
    markers = marker_fn(origin, terminal).astype(np.float64) / 255
    marked = np.maximum(image, markers)
    return marked, (int(origin[0]), int(origin[1])), (int(terminal[0]), int(terminal[1])), origin_idx, terminal_idx


def _assemble(params: PathfinderParams, contour_length: int, rng, label: int, margin: int, rec: dict,
              debug: bool, distractors: str = "exact", placed=None):
    """Distractors, markers and debug info around a placed target pair (shared by every fast path).

    ``distractors``: "exact" (:func:`_fast_distractors`, the original's draw order), "uniform"
    (:func:`_distractors_uniform`), or "placed" (``placed`` = (paddles, count) from
    :class:`_DistractorEngine`, already applied to ``rec["mask"]``).
    """
    fs = _fast(params, margin)
    images = _pair_images(fs, rec)
    image = np.maximum(images[0], images[1])
    if distractors == "exact":
        n_drawn = _fast_distractors(fs, image, rec["mask"], contour_length, rng)
    elif distractors == "uniform":
        n_drawn = _distractors_uniform(fs, image, rec["mask"], contour_length, rng)
    else:
        paddles, n_drawn = placed
        contrast = params.snake_contrast_list[0]
        for y, x, o in paddles:
            fs.draw(image, y, x, o, contrast)

    def markers(a, b):
        canvas = np.zeros((fs.H, fs.W), dtype=np.uint8)
        for c in (a, b):
            y0, y1, x0, x1, patch = fs.marker(int(c[0]), int(c[1]))
            np.maximum(canvas[y0:y1, x0:x1], patch, out=canvas[y0:y1, x0:x1])
        return canvas

    origin_tips = [[y, x] for y, x, _, _ in rec["seeds"]]
    marked, origin, terminal, oi, ti = _finish(params, image, label, origin_tips, rec["terminal"], rng, markers)
    info = _debug_info(marked, images, origin, terminal, oi, ti, margin, n_drawn, rec["attempts"]) if debug else None
    return marked, label, margin, info


def _label_and_margin(params: PathfinderParams, rng) -> tuple[int, int]:
    label = int(rng.integers(0, 2))
    n_margins = len(params.paddle_margin_list)
    margin = params.paddle_margin_list[rng.integers(0, n_margins) if n_margins > 0 else 0]
    return label, margin


def _exact_image(params: PathfinderParams, contour_length: int, rng, debug: bool = False):
    """One image drawing every number from ``rng`` in the original's order (bit-identical to the
    original and to :func:`_reference_image` for the same stream). Returns (float image, label,
    margin, debug-or-None)."""
    label, margin = _label_and_margin(params, rng)
    fs = _fast(params, margin)
    for attempt in range(1, MAX_PAIR_ATTEMPTS + 1):
        rec = _fast_two_snakes(fs, contour_length, rng)
        if rec is not None:
            break
    else:
        raise RuntimeError(f"pathfinder{params.resolution}: no target pair placed in {MAX_PAIR_ATTEMPTS} attempts")
    rec["attempts"] = attempt
    return _assemble(params, contour_length, rng, label, margin, rec, debug)


# ------------------------------------------------------------------------------------------------------
# Attempt streams: the target-pair search vectorised over many attempts ("lanes")
# ------------------------------------------------------------------------------------------------------
#
# The original retries the whole target pair until one attempt succeeds, and a failed attempt leaves no
# trace, so an image's pair is distributed as "an attempt, conditioned on success". At the hard
# settings that takes hundreds of attempts per image (~20 at 32 px after the shortcut below, ~370 at
# 128 px, thousands at 64 px), far too many for one-at-a-time Python. Here attempt j of image i draws
# its numbers from row j of its own stream of uniforms (``SeedSequence(seed, spawn_key=(res, cl, i,
# 0))``; K = 12 + 6 (cl - 1) doubles per row; an integer in [lo, hi) is ``lo + floor(u * (hi - lo))``),
# the pair of image i is its successful attempt with the smallest j, and :class:`_PairEngine` runs many
# attempts of many images side by side with NumPy. The result does not depend on how attempts are
# batched; :func:`_attempts_image` computes the same thing one attempt at a time. Snake 0's first
# orientation is drawn among the angles whose seed can succeed at all (with ``cv2_border_quirk`` only
# 30 of 360 at 32 px): an attempt whose first angle is unusable fails before any other draw, so
# skipping those attempts changes no probability (later trials still draw from all 360 degrees).

class _RowRNG:
    """``integers``/``random`` over one attempt's row of uniforms, in order."""

    __slots__ = ("row", "i")

    def __init__(self, row: np.ndarray):
        self.row = row
        self.i = 0

    def random(self) -> float:
        u = self.row[self.i]
        self.i += 1
        return u

    def integers(self, low, high):
        if high - low == 1:  # like numpy: a one-value range consumes nothing
            return low
        return low + int(self.random() * (high - low))


def _attempt_row_length(contour_length: int) -> int:
    """Uniforms one attempt can use: 2 seeds x 3 trials x 2 draws + 2 (cl - 1) extensions x 3 draws."""
    return 12 + 6 * (contour_length - 1)


def _pairwise_rows(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``np.sum(a[b, :n[b]])`` for every row b, in NumPy's own pairwise summation order (exact).

    NumPy sums fewer than 8 values left to right from 0.0; 8..128 values in 8 interleaved accumulators
    over the first ``n - n % 8`` values (block by block), combined as ((r0+r1)+(r2+r3))+((r4+r5)+
    (r6+r7)), then the rest left to right. Entries past ``n[b]`` must be 0 (adding 0.0 is exact).
    """
    B, N = a.shape
    N8 = -(-N // 8) * 8
    if N8 != N:
        a = np.concatenate([a, np.zeros((B, N8 - N))], axis=1)
    nb = n // 8
    keep = np.arange(N8 // 8)[None, :] < np.maximum(nb, 1)[:, None]
    r = np.add.reduce(np.where(keep[:, :, None], a.reshape(B, N8 // 8, 8), 0.0), axis=1)
    tree = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    small = n < 8
    acc = np.where(small, 0.0, tree)
    idx = np.where(small, 0, 8 * nb)[:, None] + np.arange(7)[None, :]
    tail = np.where(idx < n[:, None], np.take_along_axis(a, np.minimum(idx, N8 - 1), axis=1), 0.0)
    for t in range(7):
        acc = acc + tail[:, t]
    return acc


def _extend_lanes(fs: "_FastSnakes", mflat, base, A, py, px, last, draw):
    """One ``extend_snake`` in each lane of ``A`` (mask codes at ``mflat[base[lane]:]``): pivots (py, px),
    last orientation ids ``last``; ``draw(lanes)`` gives each listed lane its next uniform.

    Returns (accepted, oid, start, ny, nx): per lane whether a paddle was placed, the candidate's oid
    and padded flat start, and the new pivot. Same arithmetic as :meth:`_FastSnakes.extend`, with the
    per-lane totals in NumPy's pairwise order (:func:`_pairwise_rows`).
    """
    D = float(fs.L + 2 * fs.m)
    ny = np.ceil(py + D * fs.sin[last]).astype(np.int64)
    nx = np.ceil(px + D * fs.cos[last]).astype(np.int64)
    if ((ny < -fs.E) | (ny >= fs.H + fs.E) | (nx < -fs.E) | (nx >= fs.W + fs.E)).any():
        raise RuntimeError("pivot outside the candidate table")
    P = (ny + fs.E) * fs.G + (nx + fs.E)
    n = fs.cand_n[P]
    fl = fs.cand_flat[P]
    oids = fs.cand_oid[P]
    w = fs.wtab_sig[last[:, None], oids]  # 0 in empty slots and past the continuity cut-off
    li, ci = np.nonzero(w)
    cells = base[A[li]] + fl[li, ci]
    free = np.zeros_like(w)
    free[li, ci] = _CODE_FREE[np.maximum.reduce(mflat[fs.disk_off[:, None] + cells[None, :]], axis=0)]
    pmf = free * w
    total = _pairwise_rows(pmf, n)
    okl = (n > 0) & (total >= 1e-4)
    cmf = np.cumsum(pmf / np.where(okl, total, 1.0)[:, None], axis=1)
    searching = okl.copy()
    pick = np.zeros(A.size, dtype=np.int64)
    for _trial in range(fs.p.max_paddle_retrial + 1):
        S = np.flatnonzero(searching)
        if S.size == 0:
            break
        u = draw(A[S])
        i = np.argmax(cmf[S] - u[:, None] > 0, axis=1)
        for z in np.flatnonzero(u == 0):  # the first candidate with any free space, tiny weights too
            c = mflat[base[A[S[z]]] + fl[S[z], :n[S[z]], None] + fs.disk_off].max(axis=1)
            i[z] = int(np.argmax(_CODE_FREE[c] > 0))
        oid = oids[S, i]
        vals = mflat[fs.core_off[oid].T + (base[A[S]] + fl[S, i])[None, :]]
        accept = ~np.logical_or.reduce(vals >= fs.core_thr[oid].T, axis=0)
        pick[S[accept]] = i[accept]
        searching[S[accept]] = False
    accepted = okl & ~searching
    rows = np.arange(A.size)
    return accepted, oids[rows, pick], fl[rows, pick], ny, nx


class _Uniforms:
    """A Generator's ``random()`` sequence with ``integers`` as ``lo + floor(u (hi - lo))``; look-ahead
    taken in blocks by the distractor engine can be handed back unused, so the sequence a consumer sees
    does not depend on how it was fetched."""

    def __init__(self, gen: np.random.Generator):
        self.gen = gen
        self.buf = np.zeros(0)
        self.pos = 0

    def take(self, k: int) -> np.ndarray:
        head = self.buf[self.pos:self.pos + k]
        self.pos += head.size
        if head.size == k:
            return head
        return np.concatenate([head, self.gen.random(k - head.size)])

    def give_back(self, values: np.ndarray) -> None:
        self.buf = np.concatenate([values, self.buf[self.pos:]])
        self.pos = 0

    def random(self) -> float:
        return float(self.take(1)[0])

    def integers(self, low, high):
        if high - low == 1:  # like numpy: a one-value range consumes nothing
            return low
        return low + int(self.random() * (high - low))


_SEED_TRIES = 64  # rejection tries before a distractor seed computes its free set in full


def _seed_fallback(fs: "_FastSnakes", mc, di: int, u: float):
    """The free pixels of a distractor seed in full (shift-OR), and the ``u``-th of them (or None)."""
    H, W, PAD = fs.H, fs.W, fs.PAD
    occ = mc.reshape(H + 2 * PAD, fs.Wp)[PAD:PAD + H, PAD:PAD + W] > _OCCUPIED  # border ring included
    dil = np.zeros((H, W), dtype=bool)
    for dst, src in fs.struct(fs.theta[fs.seed_oid0 + di]).slices:
        np.logical_or(dil[dst], occ[src], out=dil[dst])
    free = np.flatnonzero(~dil)
    if free.size == 0:
        return None
    return divmod(int(free[int(u * free.size)]), W)


def _distractors_uniform(fs: "_FastSnakes", image, mc, contour_length: int, src: _Uniforms) -> int:
    """``make_many_snakes`` for the distractors, one snake at a time, in the attempt-stream model: the
    seed pixel is found by rejection (a uniform pixel, kept if the paddle-shaped neighbourhood is free,
    i.e. uniform over the free pixels like the original's ``randint`` over its list; after
    ``_SEED_TRIES`` misses the list is built in full). The twin of :class:`_DistractorEngine`."""
    p, H, W, L, m, PAD, Wp = fs.p, fs.H, fs.W, fs.L, fs.m, fs.PAD, fs.Wp
    contrast = p.snake_contrast_list[0]
    n_segments = p.distractor_length(contour_length)
    drawn = 0
    for _ in range(p.num_distractor_snakes(contour_length)):
        for _retry in range(p.max_distractor_contour_retrial + 1):
            seeded = None
            trial = 0
            while trial <= p.max_paddle_retrial:
                di = int(src.integers(-180, 180)) + 180
                oid = fs.seed_oid0 + di
                if p.cv2_border_quirk and fs.struct(fs.theta[oid]).fails:
                    break
                canvas = mc.reshape(H + 2 * PAD, Wp)[PAD:PAD + H, PAD:PAD + W]
                if float(H * W - np.count_nonzero(canvas > _OCCUPIED)) / (H * W) < 0.01:
                    break
                koff = fs.seed_koff[di, :fs.seed_kcnt[di]]
                for _try in range(_SEED_TRIES):
                    ty, tx = divmod(int(src.random() * (H * W)), W)
                    if not (mc[(ty + PAD) * Wp + tx + PAD + koff] > _OCCUPIED).any():
                        break
                else:
                    got = _seed_fallback(fs, mc, di, src.random())
                    if got is None:
                        break
                    ty, tx = got
                hy = math.ceil(ty + float(L) * fs._sin[oid])
                hx = math.ceil(tx + float(L) * fs._cos[oid])
                py = math.ceil(hy + float(L + m) * fs._rev_sin[di])
                px = math.ceil(hx + float(L + m) * fs._rev_cos[di])
                if not (0 <= hy < H and 0 <= hx < W and 0 <= py < H and 0 <= px < W):
                    trial += 1
                    continue
                seeded = (ty, tx, py, px, oid)
                break
            if seeded is None:
                continue
            ty, tx, py, px, oid = seeded
            draws = [(ty, tx, oid)]
            pending = (ty, tx, oid)
            backup = mc.copy()
            ok = True
            for _seg in range(n_segments - 1):
                got = fs.extend(mc, py, px, oid, src)
                if got is None:
                    ok = False
                    break
                hy, hx, py, px, oid = got
                draws.append((hy, hx, oid))
                fs.commit(mc, *pending)
                pending = (hy, hx, oid)
            if not ok:
                mc[:] = backup
                continue
            fs.commit(mc, *pending)
            for y, x, o in draws:
                fs.draw(image, y, x, o, contrast)
            drawn += 1
            break
    return drawn


def _head_and_pivot(fs, y, x, oid, d, L, m, H, W):
    """Vectorised seed check of ``initialize_two_seeds``: the head ``ceil(seed + L·(sin, cos)[oid])`` and the
    pivot ``ceil(head + (L + m)·(rev_sin, rev_cos)[d])`` of paddles seeded at (y, x); returns the pivot
    (qy, qx) and whether head and pivot both lie inside the H x W canvas."""
    hy = np.ceil(y + float(L) * fs.sin[oid]).astype(np.int64)
    hx = np.ceil(x + float(L) * fs.cos[oid]).astype(np.int64)
    qy = np.ceil(hy + float(L + m) * fs.rev_sin[d]).astype(np.int64)
    qx = np.ceil(hx + float(L + m) * fs.rev_cos[d]).astype(np.int64)
    inb = (hy >= 0) & (hy < H) & (hx >= 0) & (hx < W) & (qy >= 0) & (qy < H) & (qx >= 0) & (qx < W)
    return qy, qx, inb


class _DistractorEngine:
    """:func:`_distractors_uniform` for many images at once, one lane per image."""

    SEED_ANGLE, SEED_PIXEL, GROW, DONE = 0, 1, 2, 3

    def __init__(self, fs: "_FastSnakes", contour_length: int):
        p = fs.p
        if len(p.snake_contrast_list) != 1 or p.padding < 1:
            raise ValueError("the distractor engine needs one snake contrast and a mask border (padding >= 1)")
        self.fs = fs
        self.n_snakes = p.num_distractor_snakes(contour_length)
        self.dl = p.distractor_length(contour_length)
        if self.dl < 2:
            raise ValueError("the distractor engine needs distractors of at least two paddles")

    def run(self, masks: list[np.ndarray], sources: list[_Uniforms]) -> list[list[tuple[int, int, int]]]:
        """Place the distractors on each mask (modified in place); return each image's paddles."""
        fs, n_snakes, dl = self.fs, self.n_snakes, self.dl
        p, H, W, L, m, PAD, Wp = fs.p, fs.H, fs.W, fs.L, fs.m, fs.PAD, fs.Wp
        NL = len(masks)
        out: list[list] = [[] for _ in range(NL)]
        if NL == 0 or n_snakes == 0:
            return out
        mask = np.stack(masks)
        backup = mask.copy()
        mflat = mask.reshape(-1)
        base = np.arange(NL, dtype=np.int64) * fs.size
        B = 128
        U = np.stack([s.take(B) for s in sources])
        ptr = np.zeros(NL, dtype=np.int64)
        phase = np.zeros(NL, dtype=np.int64)
        snake = np.zeros(NL, dtype=np.int64)
        retry = np.zeros(NL, dtype=np.int64)
        trial = np.zeros(NL, dtype=np.int64)
        tries = np.zeros(NL, dtype=np.int64)
        di = np.zeros(NL, dtype=np.int64)
        seg = np.zeros(NL, dtype=np.int64)
        pvy = np.zeros(NL, dtype=np.int64)
        pvx = np.zeros(NL, dtype=np.int64)
        last = np.zeros(NL, dtype=np.int64)
        pend = np.zeros((NL, 3), dtype=np.int64)
        cur = np.zeros((NL, dl, 3), dtype=np.int64)
        kidx = np.arange(fs.seed_koff.shape[1])

        def draw(lanes):
            u = U[lanes, ptr[lanes]]
            ptr[lanes] += 1
            return u

        def attempt_failed(lanes):
            retry[lanes] += 1
            nxt = lanes[retry[lanes] > p.max_distractor_contour_retrial]
            snake[nxt] += 1
            retry[nxt] = 0
            trial[lanes] = 0
            phase[lanes] = np.where(snake[lanes] >= n_snakes, self.DONE, self.SEED_ANGLE)

        def seeded(lanes, ty, tx):
            """A seed pixel was found: bounds checks of head and pivot, then grow (or retry)."""
            d = di[lanes]
            oid = fs.seed_oid0 + d
            qy, qx, inb = _head_and_pivot(fs, ty, tx, oid, d, L, m, H, W)
            bad = lanes[~inb]
            trial[bad] += 1
            phase[bad] = self.SEED_ANGLE
            out_of_trials = bad[trial[bad] > p.max_paddle_retrial]
            if out_of_trials.size:
                attempt_failed(out_of_trials)
            g = lanes[inb]
            pend[g, 0], pend[g, 1], pend[g, 2] = ty[inb], tx[inb], oid[inb]
            cur[g, 0] = pend[g]
            pvy[g], pvx[g], last[g] = qy[inb], qx[inb], oid[inb]
            seg[g] = 0
            backup[g] = mask[g]
            phase[g] = self.GROW

        while True:
            live = np.flatnonzero(phase != self.DONE)
            if live.size == 0:
                break
            low = live[ptr[live] > B - 8]  # keep at least 7 uniforms ahead of every lane
            for lane in low.tolist():
                rest = U[lane, ptr[lane]:].copy()
                U[lane, :rest.size] = rest
                U[lane, rest.size:] = sources[lane].take(B - rest.size)
                ptr[lane] = 0
            # a seed orientation (one trial of ``seed_snake``)
            A = np.flatnonzero(phase == self.SEED_ANGLE)
            if A.size:
                d = (draw(A) * 360).astype(np.int64)
                di[A] = d
                fail = np.zeros(A.size, dtype=bool)
                if p.cv2_border_quirk:
                    fail |= np.array([fs.struct(fs.theta[fs.seed_oid0 + x]).fails for x in d.tolist()])
                canv = mask[A].reshape(A.size, H + 2 * PAD, Wp)[:, PAD:PAD + H, PAD:PAD + W]
                occupied = np.count_nonzero(canv > _OCCUPIED, axis=(1, 2))
                fail |= (H * W - occupied).astype(np.float64) / (H * W) < 0.01
                if fail.any():
                    attempt_failed(A[fail])
                ok = A[~fail]
                phase[ok] = self.SEED_PIXEL
                tries[ok] = 0
            # one rejection try for the seed pixel
            A = np.flatnonzero(phase == self.SEED_PIXEL)
            if A.size:
                cell = (draw(A) * (H * W)).astype(np.int64)
                ty, tx = cell // W, cell % W
                d = di[A]
                offs = fs.seed_koff[d]
                vals = mflat[base[A][:, None] + ((ty + PAD) * Wp + tx + PAD)[:, None] + offs]
                hit = ((vals > _OCCUPIED) & (kidx[None, :] < fs.seed_kcnt[d][:, None])).any(axis=1)
                tries[A[hit]] += 1
                full = np.flatnonzero(hit & (tries[A] >= _SEED_TRIES))
                found = ~hit
                for z in full.tolist():
                    lane = A[z]
                    got = _seed_fallback(fs, mask[lane], int(d[z]), float(draw(np.array([lane]))[0]))
                    if got is None:
                        attempt_failed(np.array([lane]))
                    else:
                        ty[z], tx[z] = got
                        found[z] = True
                if found.any():
                    seeded(A[found], ty[found], tx[found])
            # one growth step
            A = np.flatnonzero(phase == self.GROW)
            if A.size:
                accepted, oid, start, ny, nx = _extend_lanes(fs, mflat, base, A, pvy[A], pvx[A], last[A], draw)
                bad = A[~accepted]
                if bad.size:
                    mask[bad] = backup[bad]
                    attempt_failed(bad)
                G = np.flatnonzero(accepted)
                if G.size:
                    Ag = A[G]
                    sy, sx, o = start[G] // Wp - PAD, start[G] % Wp - PAD, oid[G]
                    fs.commit_lanes(mflat, base[Ag], pend[Ag, 0], pend[Ag, 1], pend[Ag, 2])
                    pend[Ag, 0], pend[Ag, 1], pend[Ag, 2] = sy, sx, o
                    seg[Ag] += 1
                    cur[Ag, seg[Ag]] = pend[Ag]
                    pvy[Ag], pvx[Ag], last[Ag] = ny[G], nx[G], o
                    done = Ag[seg[Ag] == dl - 1]
                    if done.size:
                        fs.commit_lanes(mflat, base[done], pend[done, 0], pend[done, 1], pend[done, 2])
                        for lane in done.tolist():
                            out[lane].extend(map(tuple, cur[lane].tolist()))
                        snake[done] += 1
                        retry[done] = 0
                        trial[done] = 0
                        phase[done] = np.where(snake[done] >= n_snakes, self.DONE, self.SEED_ANGLE)
        for lane in range(NL):
            masks[lane][:] = mask[lane]
            sources[lane].give_back(U[lane, ptr[lane]:].copy())
        return out


class _PairEngine:
    """Runs the pair attempts of many images as lanes; ``solve`` returns one pair record per image."""

    def __init__(self, fs: _FastSnakes, contour_length: int, lanes: int | None = None):
        if len(fs.p.paddle_contrast_list) != 1 or len(set(fs.p.snake_contrast_list)) != 1:
            raise ValueError("the lane engine supports one paddle contrast and one snake contrast level")
        self.fs = fs
        self.cl = contour_length
        self.K = _attempt_row_length(contour_length)
        self.steps = 2 * (contour_length - 1)
        self.NL = lanes or {32: 512, 64: 512, 128: 256}.get(fs.H, 192)

    def solve(self, streams: list[np.random.Generator]) -> list[dict]:
        fs, NL, K, steps = self.fs, self.NL, self.K, self.steps
        p, H, W, L, m, PAD, Wp = fs.p, fs.H, fs.W, fs.L, fs.m, fs.PAD, fs.Wp
        means = _contrast_means(p.snake_contrast_list, None)
        contrast = [p.paddle_contrast_list[0] * means[0], p.paddle_contrast_list[0] * means[1]]
        n_img = len(streams)
        NL = min(NL, 32 * n_img)  # a few images need few lanes: extra lanes only speculate
        # each image's attempt rows, drawn in order (row j is attempt j's) into a small pool
        PR = 16
        pool = np.stack([s_.random((PR, K)) for s_ in streams])
        pool_pos = np.zeros(n_img, dtype=np.int64)
        next_att = np.zeros(n_img, dtype=np.int64)
        unset = np.iinfo(np.int64).max
        best = np.full(n_img, unset)
        results: list = [None] * n_img

        img = np.full(NL, -1, dtype=np.int64)
        att = np.zeros(NL, dtype=np.int64)
        active = np.zeros(NL, dtype=bool)
        U = np.zeros((NL, K))
        ptr = np.zeros(NL, dtype=np.int64)
        step = np.zeros(NL, dtype=np.int64)
        pvy = np.zeros((NL, 2), dtype=np.int64)
        pvx = np.zeros((NL, 2), dtype=np.int64)
        th = np.zeros((NL, 2), dtype=np.int64)
        pend_y = np.zeros((NL, 2), dtype=np.int64)
        pend_x = np.zeros((NL, 2), dtype=np.int64)
        pend_oid = np.zeros((NL, 2), dtype=np.int64)
        seed_y = np.zeros((NL, 2), dtype=np.int64)
        seed_x = np.zeros((NL, 2), dtype=np.int64)
        seed_oid = np.zeros((NL, 2), dtype=np.int64)
        hist = np.zeros((NL, max(steps, 1), 3), dtype=np.int64)  # (y, x, oid) per growth step
        mask = np.zeros((NL, fs.size), dtype=np.uint8)
        mflat = mask.reshape(-1)
        base = np.arange(NL, dtype=np.int64) * fs.size
        state = {"cursor": 0}

        def draw(lanes):
            u = U[lanes, ptr[lanes]]
            ptr[lanes] += 1
            return u

        def retire(lanes, ok):
            """Record finished lanes (ok: success) and free them."""
            wins = lanes[ok]
            won_img, won_att = img[wins], att[wins]
            active[lanes] = False
            img[lanes] = -1
            for lane, i, a in zip(wins.tolist(), won_img.tolist(), won_att.tolist()):
                if a >= best[i]:
                    continue
                best[i] = a
                one = np.array([lane])
                fs.commit_lanes(mflat, base[one], pend_y[one, 1], pend_x[one, 1], pend_oid[one, 1])
                results[i] = dict(
                    seeds=[(int(seed_y[lane, k]), int(seed_x[lane, k]), int(seed_oid[lane, k]), contrast[k])
                           for k in range(2)],
                    draws=[(s % 2, int(hist[lane, s, 0]), int(hist[lane, s, 1]), int(hist[lane, s, 2]),
                            contrast[s % 2]) for s in range(steps)],
                    terminal=([[int(pend_y[lane, k]), int(pend_x[lane, k])] for k in range(2)] if steps
                              else [[0, 0], [0, 0]]),
                    mask=mask[lane].copy(), attempts=a + 1)

        def refill():
            while True:
                free = np.flatnonzero(~active)
                open_imgs = np.flatnonzero(best == unset)
                # refill in bulk (per-call overhead), but always when every lane is idle
                if open_imgs.size == 0 or free.size < max(1, NL // 8):
                    return
                c = state["cursor"]
                chosen = open_imgs[(c + np.arange(free.size)) % open_imgs.size]
                state["cursor"] = (c + free.size) % open_imgs.size
                order = np.argsort(chosen, kind="stable")
                free, chosen = free[order], chosen[order]
                imgs, first, counts = np.unique(chosen, return_index=True, return_counts=True)
                rank = np.arange(free.size) - np.repeat(first, counts)
                if (next_att[imgs] + counts > MAX_PAIR_ATTEMPTS).any():
                    raise RuntimeError(f"pathfinder{H}: no target pair placed in {MAX_PAIR_ATTEMPTS} attempts")
                att[free] = next_att[chosen] + rank
                next_att[imgs] += counts
                short = pool_pos[imgs] + counts > PR
                easy = ~short[np.repeat(np.arange(imgs.size), counts)]
                U[free[easy]] = pool[chosen[easy], pool_pos[chosen[easy]] + rank[easy]]
                pool_pos[imgs[~short]] += counts[~short]
                for i, f0, cnt in zip(imgs[short].tolist(), first[short].tolist(), counts[short].tolist()):
                    left = pool[i, pool_pos[i]:]
                    rows = np.concatenate([left, streams[i].random((cnt + PR - len(left), K))])
                    U[free[f0:f0 + cnt]] = rows[:cnt]
                    pool[i] = rows[cnt:cnt + PR]
                    pool_pos[i] = 0
                img[free] = chosen
                active[free] = True
                ptr[free] = 0
                step[free] = 0
                mask[free] = fs.template
                ok = pregrowth(free)
                if ok.all():
                    return
                retire(free[~ok], np.zeros(int((~ok).sum()), dtype=bool))

        def pregrowth(lanes):
            """Seed both snakes (``initialize_two_seeds``) in new lanes; False where the attempt fails."""
            n = lanes.size
            ok = np.ones(n, dtype=bool)
            done = np.zeros(n, dtype=bool)
            di0 = np.zeros(n, dtype=np.int64)
            ty = np.zeros(n, dtype=np.int64)
            tx = np.zeros(n, dtype=np.int64)
            for trial in range(p.max_paddle_retrial + 1):
                todo = np.flatnonzero(ok & ~done)
                if todo.size == 0:
                    break
                u = draw(lanes[todo])
                if trial == 0:
                    di = fs.good[(u * len(fs.good)).astype(np.int64)] + 180
                else:
                    di = (u * 360).astype(np.int64)
                cnt = fs.seed_count[di]
                ok[todo[cnt == 0]] = False
                keep = cnt > 0
                todo, di, cnt = todo[keep], di[keep], cnt[keep]
                if todo.size == 0:
                    continue
                cell = fs.seed_free[di, (draw(lanes[todo]) * cnt).astype(np.int64)].astype(np.int64)
                y, x = cell // W, cell % W
                oid = fs.seed_oid0 + di
                qy, qx, inb = _head_and_pivot(fs, y, x, oid, di, L, m, H, W)
                g_ = todo[inb]
                done[g_] = True
                di0[g_], ty[g_], tx[g_] = di[inb], y[inb], x[inb]
                pvy[lanes[g_], 0], pvx[lanes[g_], 0] = qy[inb], qx[inb]
            ok &= done
            sel = np.flatnonzero(ok)
            L0 = lanes[sel]
            seed_y[L0, 0] = pend_y[L0, 0] = ty[sel]
            seed_x[L0, 0] = pend_x[L0, 0] = tx[sel]
            seed_oid[L0, 0] = th[L0, 0] = pend_oid[L0, 0] = fs.seed_oid0 + di0[sel]
            done2 = np.zeros(n, dtype=bool)
            sd = p.seed_distance
            for trial in range(p.max_paddle_retrial + 1):
                todo = np.flatnonzero(ok & ~done2)
                if todo.size == 0:
                    break
                di = (draw(lanes[todo]) * 360).astype(np.int64)
                phi = (draw(lanes[todo]) * 360).astype(np.int64) * np.pi / 180
                y2 = np.round(ty[todo] + (sd * np.sin(phi))).astype(np.int64)
                x2 = np.round(tx[todo] + (sd * np.cos(phi))).astype(np.int64)
                oid = fs.seed_oid0 + di
                qy, qx, inb = _head_and_pivot(fs, y2, x2, oid, di, L, m, H, W)
                g_ = todo[inb]
                done2[g_] = True
                Lg = lanes[g_]
                seed_y[Lg, 1] = pend_y[Lg, 1] = y2[inb]
                seed_x[Lg, 1] = pend_x[Lg, 1] = x2[inb]
                seed_oid[Lg, 1] = th[Lg, 1] = pend_oid[Lg, 1] = oid[inb]
                pvy[Lg, 1], pvx[Lg, 1] = qy[inb], qx[inb]
            return ok & done2

        while True:
            refill()
            A = np.flatnonzero(active)
            if A.size == 0:
                break
            stale = att[A] > best[img[A]]  # a lower attempt of the same image already succeeded
            if stale.any():
                retire(A[stale], np.zeros(int(stale.sum()), dtype=bool))
                A = A[~stale]
                if A.size == 0:
                    continue
            if steps == 0:
                retire(A, np.ones(A.size, dtype=bool))
                continue
            k = step[A] % 2
            accepted, oid_all, start_all, ny, nx = _extend_lanes(fs, mflat, base, A, pvy[A, k], pvx[A, k],
                                                                 th[A, k], draw)
            failed = ~accepted
            if failed.any():
                retire(A[failed], np.zeros(int(failed.sum()), dtype=bool))
            G_ = np.flatnonzero(accepted)
            if G_.size == 0:
                continue
            Ag, kg = A[G_], k[G_]
            oid, start = oid_all[G_], start_all[G_]
            sy, sx = start // Wp - PAD, start % Wp - PAD
            fs.commit_lanes(mflat, base[Ag], pend_y[Ag, kg], pend_x[Ag, kg], pend_oid[Ag, kg])
            pend_y[Ag, kg], pend_x[Ag, kg], pend_oid[Ag, kg] = sy, sx, oid
            pvy[Ag, kg], pvx[Ag, kg] = ny[G_], nx[G_]
            th[Ag, kg] = oid
            s = step[Ag]
            hist[Ag, s, 0], hist[Ag, s, 1], hist[Ag, s, 2] = sy, sx, oid
            step[Ag] = s + 1
            finished = step[Ag] == steps
            if finished.any():
                retire(Ag[finished], np.ones(int(finished.sum()), dtype=bool))
        if any(r is None for r in results):
            raise RuntimeError("internal error: an image left the lane engine without a pair")
        return results


def _attempt_streams(seed: int, resolution: int, contour_length: int, index: int):
    """(main stream, attempt stream) of one image: label, margin, distractors and markers come from the
    first, the target pair's attempt rows from the second."""
    main = _image_rng(seed, resolution, contour_length, index)
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(resolution), int(contour_length), int(index), 0))
    return main, np.random.Generator(np.random.PCG64(ss))


def _lane_images(params: PathfinderParams, contour_length: int, seed: int, indices, debug: bool = False):
    """Images ``indices`` (the public generator): list of (float image, label, margin, debug-or-None).

    Per image: label and margin from its main stream; the target pair from its attempt stream
    (:class:`_PairEngine`); distractors (:class:`_DistractorEngine`) and the marker draw from the main
    stream's uniforms. Equal to :func:`_attempts_image` image by image.
    """
    streams = [_attempt_streams(seed, params.resolution, contour_length, i) for i in indices]
    lm = [_label_and_margin(params, main) for main, _ in streams]
    sources = [_Uniforms(main) for main, _ in streams]
    recs: list = [None] * len(streams)
    placed: list = [None] * len(streams)
    for margin in sorted({mg for _, mg in lm}):
        members = [j for j, (_, mg) in enumerate(lm) if mg == margin]
        fs = _fast(params, margin)
        for j, rec in zip(members, _PairEngine(fs, contour_length).solve([streams[j][1] for j in members])):
            recs[j] = rec
        lists = _DistractorEngine(fs, contour_length).run([recs[j]["mask"] for j in members],
                                                          [sources[j] for j in members])
        dl = params.distractor_length(contour_length)
        for j, paddles in zip(members, lists):
            placed[j] = (paddles, len(paddles) // dl)
    return [_assemble(params, contour_length, src, label, margin, rec, debug, "placed", pl)
            for src, (label, margin), rec, pl in zip(sources, lm, recs, placed)]


def _attempts_image(params: PathfinderParams, contour_length: int, seed: int, index: int, debug: bool = False):
    """What :func:`_lane_images` computes for one image, one attempt and one distractor at a time (the
    test oracle of the two lane engines)."""
    main, attempts = _attempt_streams(seed, params.resolution, contour_length, index)
    label, margin = _label_and_margin(params, main)
    fs = _fast(params, margin)
    K = _attempt_row_length(contour_length)
    for j in range(MAX_PAIR_ATTEMPTS):
        rec = _fast_two_snakes(fs, contour_length, _RowRNG(attempts.random(K)), first_choices=fs.good)
        if rec is not None:
            break
    else:
        raise RuntimeError(f"pathfinder{params.resolution}: no target pair placed in {MAX_PAIR_ATTEMPTS} attempts")
    rec["attempts"] = j + 1
    return _assemble(params, contour_length, _Uniforms(main), label, margin, rec, debug, "uniform")


def _debug_info(marked, images, origin, terminal, oi, ti, margin, n_drawn, attempts) -> PathfinderDebug:
    cmin, cmax = marked.min(), marked.max()
    cscale = cmax - cmin if cmax != cmin else 1
    strokes = np.stack([((im - cmin) * (255.0 / cscale)).clip(0, 255) + 0.5 for im in images]).astype(np.uint8)
    return PathfinderDebug(origin=origin, terminal=terminal, origin_snake=oi, terminal_snake=ti,
                           snake_strokes=strokes, margin=margin, num_distractors=n_drawn, pair_attempts=attempts)


# ------------------------------------------------------------------------------------------------------
# Reference implementation: a literal full-canvas port, for tests
# ------------------------------------------------------------------------------------------------------

def _ref_draw_line_n_mask(im_size, start, orientation, params, margin, contrast=1.0):
    line, mask = _segment_patches(orientation, params.paddle_length, params.paddle_thickness, margin,
                                  params.antialias_scale, _disk(margin * params.antialias_scale))
    if contrast != 1.0:
        line = line * contrast
    R = params.paddle_length + int(np.ceil(params.paddle_thickness)) + margin
    return _place(line, start, R, *im_size), _place(mask, start, R, *im_size)


def _ref_available(mask):
    if np.min(mask) < 0:
        return (np.array([]), np.array([])), 0
    coords = np.nonzero(1 - mask.astype(np.uint8))
    return coords, coords[0].shape[0]


def _ref_seed(image, mask, params, margin, rng, lined_border, stop_with_availability, contrast):
    """``seed_snake`` / the first half of ``initialize_two_seeds`` on full canvases."""
    L = params.paddle_length
    shape = mask.shape
    struct_shape = ((L + margin) * 2 + 1, (L + margin) * 2 + 1)
    struct_head = [L + margin + 1, L + margin + 1]
    trial = 0
    while trial <= params.max_paddle_retrial:
        orientation = rng.integers(-180, 180) * np.pi / 180
        reversed_ = orientation + np.pi if orientation + np.pi < np.pi else orientation - np.pi
        _, struct = _ref_draw_line_n_mask(struct_shape, struct_head, orientation, params, margin)
        lined = mask.copy()
        b = lined_border
        lined[:b, :] = 1
        lined[shape[0] - b:, :] = 1
        lined[:, :b] = 1
        lined[:, shape[1] - b:] = 1
        dilated = _cv2_dilate(lined, struct, -np.finfo(np.float64).max if params.cv2_border_quirk else 0.0)
        _, raw = _ref_available(np.ceil(mask - 0.3))
        coords, n = _ref_available(np.ceil(dilated - 0.3))
        if stop_with_availability is not None and float(raw) / (shape[0] * shape[1]) < stop_with_availability:
            return None
        if n == 0:
            return None
        r = rng.integers(0, n)
        tail = [coords[0][r], coords[1][r]]
        head = _translate(tail, orientation, L)
        pivot = _translate(head, reversed_, L + margin)
        if (head[0] < 0) | (head[0] >= shape[0]) | (head[1] < 0) | (head[1] >= shape[1]) | \
           (pivot[0] < 0) | (pivot[0] >= shape[0]) | (pivot[1] < 0) | (pivot[1] >= shape[1]):
            trial += 1
            continue
        break
    if trial > params.max_paddle_retrial:
        return None
    l_im, m_im = _ref_draw_line_n_mask(shape, tail, orientation, params, margin, contrast)
    return np.maximum(image, l_im), m_im, pivot, orientation, tail


def _ref_extend(last_pivot, last_orientation, last_segment_mask, image, mask, params, margin, contrast, rng):
    """``extend_snake`` + ``get_coords_cmf`` on full canvases."""
    L = params.paddle_length
    new_pivot = _translate(last_pivot, last_orientation, L + 2 * margin)
    dilated = _cv2_dilate(mask, _disk(margin))
    step = L + margin
    H, W = mask.shape
    deg_per_pixel = 360. / (2 * step * np.pi)
    samples = np.arange(0, 360, deg_per_pixel) * np.pi / 180
    ys = new_pivot[0] + (step * np.sin(samples))
    xs = new_pivot[1] + (step * np.cos(samples))
    coords = np.concatenate((np.expand_dims(ys, axis=1), np.expand_dims(xs, axis=1)), axis=1).astype(int)
    oob = (ys >= H) | (ys < 0) | (xs >= W) | (xs < 0)
    coords = np.delete(coords, np.where(oob), axis=0)
    if coords.shape[0] == 0:
        return None
    coords = np.unique(coords, axis=0)
    disp = coords - new_pivot
    orient = np.arctan2(disp[:, 0], disp[:, 1])
    delta = np.minimum(np.abs(orient - last_orientation), 2 * np.pi - np.abs(orient - last_orientation))
    delta = np.minimum(delta * params.continuity, 0.5 * np.pi)
    weights = np.maximum(np.cos(delta), 0) ** 2
    inverted = 1 - dilated[coords[:, 0], coords[:, 1]]
    pmf = np.multiply(np.array([inverted]), weights)
    total = np.sum(pmf)
    if total < 1e-4:
        return None
    cmf = np.cumsum(pmf / total)
    for _ in range(params.max_paddle_retrial + 1):
        i = np.argmax(cmf - rng.random() > 0)
        orientation = orient[i]
        head = coords[i, :]
        l_im, m_im = _ref_draw_line_n_mask(mask.shape, head, _flip(orientation), params, margin, contrast)
        if np.max(mask + m_im) < 1.8:
            return np.maximum(image, l_im), np.maximum(mask, last_segment_mask), m_im, new_pivot, orientation, head
    return None


def _ref_two_snakes(params, margin, contour_length, rng):
    H = W = params.resolution
    means = _contrast_means(params.snake_contrast_list, rng)
    n_contrasts = len(params.paddle_contrast_list)
    mask = np.zeros((H, W))
    pad = params.padding
    mask[:pad, :] = 1
    mask[-pad:, :] = 1
    mask[:, :pad] = 1
    mask[:, -pad:] = 1
    idx = rng.integers(0, n_contrasts) if n_contrasts > 1 else 0
    got = _ref_seed(np.zeros((H, W)), mask, params, margin, rng, 2 * params.seed_distance, None,
                    params.paddle_contrast_list[idx] * means[0])
    if got is None:
        return None
    image1, m1, pivot1, orient1, tail1 = got
    idx = rng.integers(0, n_contrasts) if n_contrasts > 1 else 0
    contrast = params.paddle_contrast_list[idx] * means[1]
    L = params.paddle_length
    trial = 0
    while trial <= params.max_paddle_retrial:
        orient2 = rng.integers(-180, 180) * np.pi / 180
        reversed2 = orient2 + np.pi if orient2 + np.pi < np.pi else orient2 - np.pi
        phi = rng.integers(0, 360) * np.pi / 180
        tail2 = [int(np.round(tail1[0] + (params.seed_distance * np.sin(phi)))),
                 int(np.round(tail1[1] + (params.seed_distance * np.cos(phi))))]
        head2 = _translate(tail2, orient2, L)
        pivot2 = _translate(head2, reversed2, L + margin)
        if (head2[0] < 0) | (head2[0] >= H) | (head2[1] < 0) | (head2[1] >= W) | \
           (pivot2[0] < 0) | (pivot2[0] >= H) | (pivot2[1] < 0) | (pivot2[1] >= W):
            trial += 1
            continue
        break
    if trial > params.max_paddle_retrial:
        return None
    l_im, m2 = _ref_draw_line_n_mask((H, W), tail2, orient2, params, margin, contrast)
    images = [image1, np.maximum(np.zeros((H, W)), l_im)]
    seg_masks, pivots, orients = [m1, m2], [pivot1, pivot2], [orient1, orient2]
    terminal = [[0, 0], [0, 0]]
    for _ in range(contour_length - 1):
        idx = rng.integers(0, n_contrasts) if n_contrasts > 0 else 0
        c = params.paddle_contrast_list[idx]
        for k in range(2):
            got = _ref_extend(list(pivots[k]), orients[k], seg_masks[k], images[k], mask, params, margin,
                              c * means[k], rng)
            if got is None:
                return None
            images[k], mask, seg_masks[k], pivots[k], orients[k], terminal[k] = got
    mask = np.maximum(mask, seg_masks[-1])
    return images, mask, [tail1, tail2], terminal


def _ref_make_snake(image, mask, params, margin, num_segments, rng):
    contrasts = params.snake_contrast_list
    n = len(contrasts)
    contrast = contrasts[rng.integers(0, n) if n > 0 else 0]
    got = _ref_seed(image.copy(), mask.copy(), params, margin, rng, 1, 0.01, contrast)
    if got is None:
        return image, mask, False
    cur_image, seg_mask, pivot, orientation, _ = got
    cur_mask = mask.copy()
    for _ in range(num_segments - 1):
        contrast = contrasts[rng.integers(0, n) if n > 0 else 0]
        got = _ref_extend(list(pivot), orientation, seg_mask, cur_image, cur_mask, params, margin, contrast, rng)
        if got is None:
            return image, mask, False
        cur_image, cur_mask, seg_mask, pivot, orientation, _ = got
    return cur_image, np.maximum(cur_mask, seg_mask), True


def _reference_image(params: PathfinderParams, contour_length: int, rng, debug: bool = False):
    """One image with the literal full-canvas port (slow). Same return value as :func:`_exact_image`."""
    H = W = params.resolution
    label = int(rng.integers(0, 2))
    n_margins = len(params.paddle_margin_list)
    margin = params.paddle_margin_list[rng.integers(0, n_margins) if n_margins > 0 else 0]
    for attempt in range(1, MAX_PAIR_ATTEMPTS + 1):
        pair = _ref_two_snakes(params, margin, contour_length, rng)
        if pair is not None:
            break
    else:
        raise RuntimeError(f"pathfinder{params.resolution}: no target pair placed in {MAX_PAIR_ATTEMPTS} attempts")
    images, mask, origin_tips, terminal_tips = pair
    image = np.maximum(images[0], images[1])
    n_drawn = 0
    for _ in range(params.num_distractor_snakes(contour_length)):
        for _retry in range(params.max_distractor_contour_retrial + 1):
            image, mask, ok = _ref_make_snake(image, mask, params, margin,
                                              params.distractor_length(contour_length), rng)
            if ok:
                n_drawn += 1
                break

    def markers(a, b):
        aa = params.antialias_scale
        return np.maximum(_circle_full(H, W, a, params.marker_radius, aa),
                          _circle_full(H, W, b, params.marker_radius, aa))

    marked, origin, terminal, oi, ti = _finish(params, image, label, origin_tips, terminal_tips, rng, markers)
    info = _debug_info(marked, images, origin, terminal, oi, ti, margin, n_drawn, attempt) if debug else None
    return marked, label, margin, info


# ------------------------------------------------------------------------------------------------------
# Public generator API
# ------------------------------------------------------------------------------------------------------

def generate_image(resolution: int, difficulty: str, seed: int, index: int, *, images_per_batch: int = 1000,
                   debug: bool = False):
    """Image ``index`` of the (resolution, difficulty, seed) data set.

    Returns ``(image uint8 (H, W), label int, metadata_row list[str])`` — the row is the release's 11
    fields for batch ``index // images_per_batch`` — plus a :class:`PathfinderDebug` when ``debug``.
    """
    params = _params(resolution)
    cl = DIFFICULTIES[_difficulty(difficulty)]
    marked, label, margin, info = _lane_images(params, cl, seed, [int(index)], debug=debug)[0]
    row = _metadata_row(params, cl, label, margin, index, images_per_batch)
    if debug:
        return _bytescale(marked), label, row, info
    return _bytescale(marked), label, row


def _generate_chunk(job):
    """Worker: images ``start .. start+count-1`` as (start, uint8 (n, H, W), int64 labels, margins)."""
    resolution, cl, seed, start, count = job
    params = _params(resolution)
    images = np.empty((count, resolution, resolution), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    margins = np.empty(count, dtype=np.int64)
    for j, (marked, label, margin, _) in enumerate(_lane_images(params, cl, seed, range(start, start + count))):
        images[j] = _bytescale(marked)
        labels[j] = label
        margins[j] = margin
    return start, images, labels, margins


def _iter_chunks(resolution: int, difficulty: str, num_samples: int, seed: int, workers: int | None,
                 chunk: int, progress: bool):
    """Yield (start, images, labels, margins) chunk by chunk, in order; at most ``2 * workers`` chunks
    are in flight, so memory stays bounded whatever ``num_samples`` is."""
    params = _params(resolution)
    key = _difficulty(difficulty)
    cl = DIFFICULTIES[key]
    if num_samples < 0 or chunk < 1:
        raise ValueError(f"num_samples must be >= 0 and chunk >= 1, got {num_samples}, {chunk}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = [(params.resolution, cl, int(seed), s, min(chunk, num_samples - s)) for s in range(0, num_samples, chunk)]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=num_samples, desc=f"pathfinder{resolution}/{DIFFICULTY_FOLDERS[key]}", unit="img",
                   smoothing=0.05)
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                res = _generate_chunk(job)
                if bar is not None:
                    bar.update(len(res[2]))
                yield res
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads (torch)
            with ctx.Pool(min(workers, len(jobs))) as pool:
                pending: deque = deque()
                todo = iter(jobs)
                for job in itertools.islice(todo, 2 * workers):
                    pending.append(pool.apply_async(_generate_chunk, (job,)))
                while pending:
                    res = pending.popleft().get()
                    for job in itertools.islice(todo, 1):
                        pending.append(pool.apply_async(_generate_chunk, (job,)))
                    if bar is not None:
                        bar.update(len(res[2]))
                    yield res
    finally:
        if bar is not None:
            bar.close()


def iter_generate(resolution: int, difficulty: str, num_samples: int, seed: int = 0, workers: int | None = None,
                  chunk: int = 256, progress: bool = False) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start_index, images uint8 (n, H, W), labels int64 (n,))`` in index order.

    Chunks of ``chunk`` images are generated by ``workers`` processes (default: all cores; 1 = in
    process). Only a few chunks are alive at once, so a caller can fill a memory-mapped array of any
    size. Output is the same for any ``workers`` and ``chunk``.
    """
    for start, images, labels, _ in _iter_chunks(resolution, difficulty, num_samples, seed, workers, chunk, progress):
        yield start, images, labels


def generate_arrays(resolution: int, difficulty: str, num_samples: int, seed: int = 0, workers: int | None = None,
                    progress: bool = True, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` images and labels: (uint8 (N, H, W), int64 (N,)); see :func:`iter_generate`."""
    images = np.empty((num_samples, resolution, resolution), dtype=np.uint8)
    labels = np.empty(num_samples, dtype=np.int64)
    for start, imgs, labs in iter_generate(resolution, difficulty, num_samples, seed, workers, chunk, progress):
        images[start:start + len(labs)] = imgs
        labels[start:start + len(labs)] = labs
    return images, labels


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_release_layout(root: str | Path, resolution: int, difficulty: str, num_samples: int, seed: int = 0,
                         workers: int | None = None, images_per_batch: int = 1000, progress: bool = True) -> Path:
    """Generate a data set in the LRA release layout and return its difficulty folder.

    Writes ``<root>/pathfinder{res}/<curv_...>/imgs/<batch>/sample_<i>.png`` (8-bit 'L') and
    ``metadata/<batch>.npy`` as text (one 11-field line per image, §2.5), every file through a
    temporary name and a rename, a batch's metadata only after all its images. Images are the same
    as :func:`generate_arrays` with the same arguments.
    """
    params = _params(resolution)
    key = _difficulty(difficulty)
    cl = DIFFICULTIES[key]
    if images_per_batch < 1:
        raise ValueError(f"images_per_batch must be >= 1, got {images_per_batch}")
    base = Path(root) / f"pathfinder{resolution}" / DIFFICULTY_FOLDERS[key]
    n_batches = (num_samples + images_per_batch - 1) // images_per_batch
    stale = sorted(f.name for f in (base / "metadata").glob("*.npy")
                   if not (f.stem.isdigit() and int(f.stem) < n_batches))
    if stale:
        raise FileExistsError(f"{base / 'metadata'} already holds batches outside the {n_batches} being written "
                              f"({stale[:5]}...); a reader would mix them in. Remove them or use another root.")
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    rows: dict[int, list[str]] = {}
    done_in_batch: dict[int, int] = {}
    for start, images, labels, margins in _iter_chunks(resolution, key, num_samples, seed, workers,
                                                       min(256, images_per_batch), progress):
        for j in range(len(labels)):
            index = start + j
            batch, nimg = divmod(index, images_per_batch)
            folder = base / "imgs" / str(batch)
            if batch not in rows:
                folder.mkdir(parents=True, exist_ok=True)
                rows[batch] = []
                done_in_batch[batch] = 0
            write_atomic(folder / f"sample_{nimg}.png", _png_bytes(images[j]))
            rows[batch].append(" ".join(_metadata_row(params, cl, int(labels[j]), int(margins[j]), index,
                                                      images_per_batch)))
            done_in_batch[batch] += 1
            size = min(images_per_batch, num_samples - batch * images_per_batch)
            if done_in_batch[batch] == size:
                write_atomic(base / "metadata" / f"{batch}.npy", ("\n".join(rows.pop(batch)) + "\n").encode())
    if rows:
        raise RuntimeError(f"internal error: batches {sorted(rows)} of {n_batches} were not completed")
    return base


# ------------------------------------------------------------------------------------------------------
# Reader for the release layout
# ------------------------------------------------------------------------------------------------------

def _layout_error(root: Path, resolution: int, difficulty_folder: str, detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Pathfinder data not found: {detail}. Expected the LRA release layout under {root}: "
        f"pathfinder{resolution}/{difficulty_folder}/imgs/<batch>/sample_<i>.png + "
        f"pathfinder{resolution}/{difficulty_folder}/metadata/<batch>.npy (root may also be the "
        f"pathfinder{resolution}/ folder itself; e.g. pathfinder{resolution}/curv_contour_length_14/imgs/<batch>/"
        f"sample_<i>.png + metadata/<batch>.npy). Get it from the LRA release archive lra_release.gz "
        f"(lra_release/lra_release/pathfinder{resolution}/), or generate it with our generator: "
        f"python -m lra.prepare task=pathfinder task.resolution={resolution} task.num_samples=N "
        f"task.data_dir=PATH")


def _resolve_difficulty_dir(root: str | Path, resolution: int, difficulty: str) -> Path:
    root = Path(root)
    folder = DIFFICULTY_FOLDERS[_difficulty(difficulty)]
    for base in (root / f"pathfinder{resolution}", root):
        if (base / folder / "metadata").is_dir():
            return base / folder
    raise _layout_error(root, resolution, folder, f"no {folder}/metadata/ folder in {root} "
                                                  f"or {root / f'pathfinder{resolution}'}")


def _read_metadata(path: Path) -> list[list[str]]:
    """Rows of one metadata file: the release's text lines or the original's binary ``np.save``."""
    data = path.read_bytes()
    if data.startswith(b"\x93NUMPY"):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path}: unreadable binary metadata array ({e})") from e
        if arr.ndim != 2:
            raise ValueError(f"{path}: binary metadata must be a 2-D array of strings, got shape {arr.shape}")
        rows = [[str(x) for x in r] for r in arr]
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: metadata is neither text nor a NumPy array ({e})") from e
        rows = [line.split() for line in text.splitlines() if line.strip()]
    for n, r in enumerate(rows):
        if len(r) != 11:
            raise ValueError(f"{path}: line {n + 1} has {len(r)} fields, expected 11 "
                             f"(subpath filename nimg label continuity contour_length distractor_length "
                             f"paddle_length paddle_thickness paddle_margin n_paddle_contrasts): {r}")
        if r[3] not in ("0", "1"):
            raise ValueError(f"{path}: line {n + 1} has label {r[3]!r}, expected 0 or 1")
    return rows


def _batch_sort_key(p: Path):
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)


def read_release_layout(root: str | Path, resolution: int, difficulty: str,
                        progress: bool = True) -> tuple[list[Path], np.ndarray, int]:
    """Image paths and labels of one (resolution, difficulty) folder of the release layout.

    ``root`` is the folder holding ``pathfinder{res}/`` or that folder itself. Metadata files are read
    in numeric batch order, lines in file order. Zero-byte PNGs are skipped and counted (third return
    value); a listed image that does not exist raises ``FileNotFoundError`` naming it.
    """
    base = _resolve_difficulty_dir(root, resolution, difficulty)
    files = sorted((base / "metadata").glob("*.npy"), key=_batch_sort_key)
    if not files:
        raise _layout_error(Path(root), resolution, base.name, f"{base / 'metadata'} holds no <batch>.npy file")
    rows = []
    for f in files:
        rows.extend(_read_metadata(f))
    paths: list[Path] = []
    labels: list[int] = []
    skipped = 0
    it = rows
    if progress:
        from tqdm import tqdm
        it = tqdm(rows, desc=f"pathfinder{resolution}/{base.name} index", unit="img")
    for r in it:
        path = base / r[0] / r[1]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: listed in {base / 'metadata'} but missing") from None
        if size == 0:
            skipped += 1
            continue
        paths.append(path)
        labels.append(int(r[3]))
    return paths, np.asarray(labels, dtype=np.int64), skipped


def load_png(path: str | Path, resolution: int) -> np.ndarray:
    """One release image as uint8 (H*W,), row-major; ``ValueError`` naming the file if it is unusable."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file ({len(data)} bytes, bad signature)")
    if PNG_IEND not in data[-64:]:
        raise ValueError(f"{path}: truncated PNG (no IEND chunk at the end)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode, size = im.mode, im.size
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: corrupt PNG ({type(e).__name__}: {e})") from e
    if mode != "L":
        raise ValueError(f"{path}: expected an 8-bit greyscale ('L') PNG, got mode {mode!r}")
    if size != (resolution, resolution):
        raise ValueError(f"{path}: expected {resolution}x{resolution} pixels, got {size[0]}x{size[1]}")
    return np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)
