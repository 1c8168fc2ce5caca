"""A sample video made on the spot, so that ``vidmem ask --demo`` needs nothing but this repository.

Six scenes of five seconds each (a bouncing ball, a passing car, a count from 1 to 5, a sunset, squares
changing colour, the end), each with a caption and a running clock drawn into the frames in a built-in
5x7 pixel font. Written once with PyAV into a cache directory and reused.

Knows nothing about vidmem's settings, models or services; PyAV and numpy only.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

DEMO_VERSION = 1
"""Part of the file name: bumped whenever the video changes, so an older cached copy is not reused."""

WIDTH, HEIGHT, FPS, SCENE_S = 400, 240, 10, 5

_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}
_FONT = {c: np.array([[b == "1" for b in row] for row in rows.split()]) for c, rows in _GLYPHS.items()}
"""Each glyph as a [7, 5] bool mask."""

Image = np.ndarray
"""[HEIGHT, WIDTH, 3] uint8 RGB."""


def draw_text(img: Image, text: str, x: int, y: int, scale: int, color: tuple[int, int, int]) -> None:
    """Draw ``text`` (upper-cased; unknown characters as '?') with its top-left corner at (x, y), each font
    pixel ``scale`` pixels wide, on a dark box so that it reads on any background; clipped at the edges."""
    cell = 6 * scale
    h, w = img.shape[:2]
    x0, y0 = max(0, x - scale), max(0, y - scale)
    img[y0 : min(h, y + 8 * scale), x0 : min(w, x + cell * len(text))] //= 4
    for i, ch in enumerate(text.upper()):
        mask = np.kron(_FONT.get(ch, _FONT["?"]), np.ones((scale, scale), dtype=bool))
        gx = x + i * cell
        sub = img[y : y + mask.shape[0], gx : gx + mask.shape[1]]
        sub[mask[: sub.shape[0], : sub.shape[1]]] = color


def _sky(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image:
    ramp = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    col = (1 - ramp) * np.array(top) + ramp * np.array(bottom)
    return np.broadcast_to(col, (HEIGHT, WIDTH, 3)).astype(np.uint8).copy()


def _disc(img: Image, cx: float, cy: float, r: float, color: tuple[int, int, int]) -> None:
    yy, xx = np.ogrid[:HEIGHT, :WIDTH]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = color


def _ball(t: float) -> Image:
    img = _sky((90, 160, 235), (170, 210, 250))
    img[190:] = (40, 150, 60)
    x = 30 + (WIDTH - 60) * t / SCENE_S
    y = 190 - 18 - 110 * abs(np.sin(np.pi * t * 1.2))
    _disc(img, x, y, 18, (220, 30, 30))
    return img


def _car(t: float) -> Image:
    img = _sky((120, 180, 230), (200, 220, 240))
    img[170:] = (80, 80, 80)
    for lane in range(0, WIDTH, 40):
        img[196:200, lane : lane + 20] = (240, 240, 240)
    x = int(-90 + (WIDTH + 120) * t / SCENE_S)
    left, right = max(0, x), max(0, min(WIDTH, x + 90))
    img[140:175, left:right] = (30, 60, 200)
    img[120:142, max(0, x + 20) : max(0, min(WIDTH, x + 65))] = (30, 60, 200)
    for wx in (x + 18, x + 72):
        if 0 <= wx < WIDTH:
            _disc(img, wx, 178, 10, (15, 15, 15))
    return img


def _count(t: float) -> Image:
    img = np.full((HEIGHT, WIDTH, 3), (245, 240, 225), dtype=np.uint8)
    digit = str(min(5, int(t) + 1))
    draw_text(img, digit, WIDTH // 2 - 25, 60, 10, (20, 20, 120))
    return img


def _sunset(t: float) -> Image:
    k = t / SCENE_S
    img = _sky((int(250 - 220 * k), int(150 - 130 * k), int(60 + 20 * k)), (int(250 - 200 * k), 90, 40))
    _disc(img, WIDTH * 0.6, 60 + 150 * k, 28, (255, 220, 60))
    img[200:] = (int(60 - 40 * k), int(40 - 30 * k), 20)
    return img


_PALETTE = ((230, 40, 40), (40, 180, 60), (40, 80, 230), (240, 200, 30), (160, 60, 200))


def _squares(t: float) -> Image:
    img = np.full((HEIGHT, WIDTH, 3), 235, dtype=np.uint8)
    for i in range(3):
        color = _PALETTE[(int(t * 2) + i) % len(_PALETTE)]
        x = 45 + i * 120
        img[70:170, x : x + 90] = color
    return img


def _end(t: float) -> Image:
    img = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    draw_text(img, "THE END", WIDTH // 2 - 84, 100, 4, (255, 255, 255))
    return img


SCENES: tuple[tuple[str, Callable[[float], Image]], ...] = (
    ("A RED BALL BOUNCES", _ball),
    ("A BLUE CAR DRIVES BY", _car),
    ("COUNTING FROM 1 TO 5", _count),
    ("THE SUN SETS", _sunset),
    ("THREE SQUARES CHANGE COLOUR", _squares),
    ("THAT IS ALL", _end),
)
"""Each scene's caption and painter (seconds into the scene -> background image)."""


def frame_at(i: int) -> Image:
    """Frame ``i`` of the demo (at FPS): the scene, its caption at the bottom, the clock at the top."""
    t = i / FPS
    n = min(len(SCENES) - 1, int(t // SCENE_S))
    caption, paint = SCENES[n]
    img = paint(t - n * SCENE_S)
    draw_text(img, f"SCENE {n + 1}  00:{int(t):02d}", 8, 8, 2, (255, 255, 255))
    draw_text(img, caption, 8, HEIGHT - 24, 2, (255, 255, 0))
    return img


def write_demo(path: Path) -> None:
    """Write the demo video (H.264 if the bundled FFmpeg has it, else MPEG-4 Part 2) to ``path`` (.mp4)."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(len(SCENES) * SCENE_S * FPS):
            frame = av.VideoFrame.from_ndarray(frame_at(i), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def demo_path(cache_dir: Path) -> Path:
    """Where ``demo_video`` keeps the demo video in ``cache_dir``."""
    return cache_dir / f"vidmem-demo-v{DEMO_VERSION}.mp4"


def demo_video(cache_dir: Path) -> Path:
    """The demo video in ``cache_dir``, made now if missing: written under a temporary name and renamed
    into place, so that a reader never sees half a file."""
    final = demo_path(cache_dir)
    if final.is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".demo-{uuid.uuid4().hex}.mp4"
    try:
        write_demo(tmp)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return final
