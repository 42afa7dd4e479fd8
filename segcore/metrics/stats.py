"""Label statistics of a corpus, from segment metadata alone: summable per-shard partials, merged in the reduce.

What a labelled corpus looks like without ground truth: images by status, and per category the segments,
pixels and images it appears in; things per image; segment sizes in powers of two.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from segcore.categories import Categories

SIZE_BINS = 32  # bin b holds areas in [2**b, 2**(b+1)); the last bin also holds everything larger


def size_bin(area: int) -> int:
    """The power-of-two bin of a segment area (>= 1)."""
    return min(max(int(area), 1).bit_length() - 1, SIZE_BINS - 1)


@dataclass
class LabelStats:
    """Summable statistics of labelled images.

    Attributes:
        statuses: images per row status ("ok" and the error statuses).
        pixels: pixels of labelled images; ``unlabelled_pixels`` of them belong to no segment.
        segments, category_pixels, category_images: per category id.
        things_per_image: images per number of thing segments.
        size_histogram: segments per power-of-two area bin (see ``size_bin``).
    """

    statuses: Counter = field(default_factory=Counter)
    pixels: int = 0
    unlabelled_pixels: int = 0
    segments: Counter = field(default_factory=Counter)
    category_pixels: Counter = field(default_factory=Counter)
    category_images: Counter = field(default_factory=Counter)
    things_per_image: Counter = field(default_factory=Counter)
    size_histogram: list[int] = field(default_factory=lambda: [0] * SIZE_BINS)

    @property
    def images(self) -> int:
        """All images, labelled or not."""
        return sum(self.statuses.values())

    def add_image(self, width: int, height: int, segments: Sequence[Mapping], status: str = "ok") -> None:
        """Adds a labelled image (its segments: category_id, isthing, area)."""
        self.statuses[status] += 1
        self.pixels += width * height
        self.unlabelled_pixels += width * height - sum(int(s["area"]) for s in segments)
        self.things_per_image[sum(bool(s["isthing"]) for s in segments)] += 1
        for category_id in {int(s["category_id"]) for s in segments}:
            self.category_images[category_id] += 1
        for segment in segments:
            category_id = int(segment["category_id"])
            self.segments[category_id] += 1
            self.category_pixels[category_id] += int(segment["area"])
            self.size_histogram[size_bin(segment["area"])] += 1

    def add_failure(self, status: str) -> None:
        """Adds an image that could not be labelled."""
        self.statuses[status] += 1

    def __iadd__(self, other: "LabelStats") -> "LabelStats":
        for name in ("statuses", "segments", "category_pixels", "category_images", "things_per_image"):
            getattr(self, name).update(getattr(other, name))
        self.pixels += other.pixels
        self.unlabelled_pixels += other.unlabelled_pixels
        self.size_histogram = [a + b for a, b in zip(self.size_histogram, other.size_histogram)]
        return self

    def to_json(self) -> dict:
        """JSON-ready form (integer keys become strings)."""
        def counts(counter: Counter) -> dict:
            return {str(k): v for k, v in sorted(counter.items())}

        return {
            "statuses": dict(sorted(self.statuses.items())), "pixels": self.pixels,
            "unlabelled_pixels": self.unlabelled_pixels, "segments": counts(self.segments),
            "category_pixels": counts(self.category_pixels), "category_images": counts(self.category_images),
            "things_per_image": counts(self.things_per_image), "size_histogram": list(self.size_histogram),
        }

    @classmethod
    def from_json(cls, document: Mapping) -> "LabelStats":
        """Inverse of :meth:`to_json`."""
        def counts(name: str) -> Counter:
            return Counter({int(k): v for k, v in document[name].items()})

        return cls(
            statuses=Counter(document["statuses"]), pixels=document["pixels"],
            unlabelled_pixels=document["unlabelled_pixels"], segments=counts("segments"),
            category_pixels=counts("category_pixels"), category_images=counts("category_images"),
            things_per_image=counts("things_per_image"), size_histogram=list(document["size_histogram"]),
        )


def summary(stats: LabelStats, categories: Categories) -> dict:
    """The statistics as metrics.json reports them: totals, per class (in category order) and histograms."""
    labelled = stats.statuses.get("ok", 0) + sum(v for k, v in stats.statuses.items() if k.startswith("bad_ground"))
    per_class = {}
    for category in categories:
        per_class[category.id] = {
            "name": category.name, "isthing": category.isthing, "segments": stats.segments.get(category.id, 0),
            "pixels": stats.category_pixels.get(category.id, 0), "images": stats.category_images.get(category.id, 0),
            "pixel_fraction": stats.category_pixels.get(category.id, 0) / stats.pixels if stats.pixels else 0.0,
        }
    return {
        "images": stats.images,
        "labelled_images": labelled,
        "statuses": dict(sorted(stats.statuses.items())),
        "segments": sum(stats.segments.values()),
        "pixels": stats.pixels,
        "unlabelled_fraction": stats.unlabelled_pixels / stats.pixels if stats.pixels else 0.0,
        "per_class": per_class,
        "things_per_image": {str(k): v for k, v in sorted(stats.things_per_image.items())},
        "size_histogram": {f"[2^{b}, 2^{b + 1})": n for b, n in enumerate(stats.size_histogram) if n},
    }


def format_summary(document: Mapping) -> str:
    """Markdown tables of a :func:`summary` document: totals, classes by pixels, things per image, sizes."""
    lines = [
        f"{document['images']} images ({document['labelled_images']} labelled; statuses "
        + ", ".join(f"{k}: {v}" for k, v in document["statuses"].items()) + f"), {document['segments']} segments, "
        f"{100 * document['unlabelled_fraction']:.1f} % of pixels unlabelled.",
        "",
        "| class | thing | segments | images | pixels % |",
        "|---|---|---:|---:|---:|",
    ]
    rows = sorted(document["per_class"].values(), key=lambda r: (-r["pixels"], r["name"]))
    lines += [f"| {r['name']} | {'yes' if r['isthing'] else 'no'} | {r['segments']} | {r['images']} | "
              f"{100 * r['pixel_fraction']:.2f} |" for r in rows if r["segments"]]
    lines += ["", "| things per image | images |", "|---:|---:|"]
    lines += [f"| {k} | {v} |" for k, v in document["things_per_image"].items()]
    lines += ["", "| segment area (pixels) | segments |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in document["size_histogram"].items()]
    return "\n".join(lines)
