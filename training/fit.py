"""`trapline train fit`: fine-tune YOLOv8 with Ultralytics, offline and reproducibly.

Rare classes can be oversampled (repeat-factor sampling, as LVIS and the Snapshot Serengeti
remedies for imbalance): an image is listed ceil(sqrt(max_count / count)) times in the training
list, by its rarest class.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


def offline_environment(config_dir: Path) -> None:
    """Ultralytics must never reach the network: no hub, no font download, no auto-install."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    font = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        import matplotlib

        font.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)


def _label_classes(label_file: Path) -> list[int]:
    return [int(line.split()[0]) for line in label_file.read_text().splitlines() if line.strip()]


def _groups(names: dict[int, str] | list[str]) -> dict[int, str]:
    """Class index -> what rarity is counted by: the published category for a COCO label space (a
    deer named "cow" or "bear" is not rare), else the class itself."""
    from trapline.edge.model_info import COCO_CATEGORIES

    named = dict(enumerate(names)) if isinstance(names, list) else {int(k): str(v) for k, v in names.items()}
    coco = len(named) == 80 and named.get(0) == "person"
    return {i: (COCO_CATEGORIES.get(n) or n) if coco else n for i, n in named.items()}


def oversampled_data_yaml(data_yaml: Path) -> Path:
    """A copy of data.yaml whose train entry is a list file repeating images of rare classes."""
    data = yaml.safe_load(data_yaml.read_text())
    root = Path(data["path"])
    images = sorted((root / data["train"]).iterdir())
    group = _groups(data["names"])
    per_image = {
        img: [group[c] for c in _label_classes(root / "labels" / "train" / img.with_suffix(".txt").name)]
        for img in images
    }
    counts: Counter[str] = Counter(c for classes in per_image.values() for c in set(classes))
    most = max(counts.values(), default=1)
    lines = []
    for img, classes in per_image.items():
        repeat = max((math.ceil(math.sqrt(most / counts[c])) for c in set(classes)), default=1)
        lines.extend([str(img.resolve())] * repeat)
    listing = root / "train_oversampled.txt"
    listing.write_text("\n".join(lines) + "\n")
    data["train"] = str(listing)
    target = data_yaml.with_name("data_oversampled.yaml")
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    log.info("oversampling: %d training images listed %d times", len(images), len(lines))
    return target


def fit(
    data_yaml: Path,
    weights: Path,
    out: Path,
    epochs: int = 50,
    imgsz: int = 640,
    batch: int = 8,
    seed: int = 0,
    oversample: bool = False,
    patience: int = 20,
    device: str = "cpu",
    workers: int = 2,
    freeze: int = 0,
    cache: bool = True,
    plots: bool = True,
) -> Path:
    """Train; returns `best.pt`, or `last.pt` when early stopping is off (patience 0): with a
    small val split, "best" is mostly noise and a fixed schedule is the honest choice.

    An interrupted run (its `last.pt` is there but the schedule unfinished) resumes where it
    stopped. `cache` keeps decoded photos in memory: on a 2-core machine JPEG decoding of the four
    photos of every mosaic otherwise takes as long as the training step.
    """
    offline_environment(out / ".ultralytics")
    from ultralytics import YOLO

    if not weights.exists():
        raise FileNotFoundError(f"weights {weights} not found (offline: pass a local .pt or .yaml)")
    last = out / "fit" / "weights" / "last.pt"
    if last.exists() and _unfinished(last):
        log.info("resuming the interrupted run in %s", last.parent.parent)
        YOLO(str(last)).train(resume=True)
        return _chosen(out, patience)
    data = oversampled_data_yaml(data_yaml) if oversample else data_yaml
    model = YOLO(str(weights))
    model.train(
        cache="ram" if cache else False,
        data=str(data),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        seed=seed,
        deterministic=True,
        workers=workers,
        device=device,
        project=str(out.resolve()),
        name="fit",
        exist_ok=True,
        patience=patience,
        freeze=freeze or None,
        amp=False,
        plots=plots,
        verbose=False,
    )
    return _chosen(out, patience)


def _unfinished(last: Path) -> bool:
    import torch

    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    return int(checkpoint.get("epoch", -1)) >= 0  # Ultralytics sets -1 once training has finished


def _chosen(out: Path, patience: int) -> Path:
    chosen = out / "fit" / "weights" / ("best.pt" if patience else "last.pt")
    if not chosen.exists():
        raise RuntimeError(f"training finished without {chosen}")
    return chosen
