"""Benchmark: id-map PNG encode/decode settings and decoders, on synthetic 640x480 panoptic maps.

    python bench/png_codec.py [--images 40] [--repeats 5]

Prints a markdown table: milliseconds per map and bytes per file, for the project's codec at each
filter and level, against Pillow (as panopticapi writes and reads) and, where installed, pyspng / OpenCV.
"""

from __future__ import annotations

import argparse
import io
import platform
import time

import numpy as np
from PIL import Image

from segcore import png
from segcore.categories import coco_panoptic_categories
from segcore.synthetic import make_scene


def make_maps(count: int) -> list[np.ndarray]:
    categories = coco_panoptic_categories()
    return [make_scene(np.random.default_rng(seed), 480, 640, categories)[0] for seed in range(count)]


def best_ms(function, items, repeats: int) -> float:
    function(items[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            function(item)
        times.append((time.perf_counter() - start) / len(items))
    return 1000 * min(times)


def pillow_encode(ids: np.ndarray, level: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(png.id2rgb(ids).copy()).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def pillow_decode(data: bytes) -> np.ndarray:
    return png.rgb2id(np.asarray(Image.open(io.BytesIO(data))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    maps = make_maps(args.images)
    print(f"{args.images} synthetic 640x480 maps, best of {args.repeats}; {platform.processor() or platform.machine()}")
    print("| encoder | encode ms | bytes | decode ms (segcore) | decode ms (Pillow) |")
    print("|---|---|---|---|---|")
    rows = [("Pillow, level 6 (its default)", lambda m: pillow_encode(m, 6)), ("Pillow, level 1", lambda m: pillow_encode(m, 1))]
    rows += [
        (f"segcore, filter {f}, zlib-ng level {level}", lambda m, f=f, level=level: png.encode_ids(m, level, f))
        for f in png.FILTERS for level in (1, 6, 9)
    ]
    for name, encode in rows:
        files = [encode(m) for m in maps]
        encode_ms = best_ms(encode, maps, args.repeats)
        ours = best_ms(png.decode_ids, files, args.repeats)
        theirs = best_ms(pillow_decode, files, args.repeats)
        print(f"| {name} | {encode_ms:.2f} | {np.mean([len(f) for f in files]):.0f} | {ours:.2f} | {theirs:.2f} |")
    files = [pillow_encode(m) for m in maps]
    for name, module, decode in (("pyspng", "pyspng", "load"), ("OpenCV", "cv2", "imdecode")):
        try:
            library = __import__(module)
        except ImportError:
            print(f"({name} not installed)")
            continue
        if module == "cv2":
            library.setNumThreads(1)
            function = lambda d: library.imdecode(np.frombuffer(d, np.uint8), library.IMREAD_UNCHANGED)  # noqa: E731
        else:
            function = getattr(library, decode)
        print(f"{name} decode of Pillow-default files (pixels only, no ids): {best_ms(function, files, args.repeats):.2f} ms")


if __name__ == "__main__":
    main()
