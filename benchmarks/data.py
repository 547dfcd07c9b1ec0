"""Data layer: ImageNet32 conversion time and peak memory, and HDF5 loader throughput.

1. Fabricates ImageNet32 in the official npz format (10 train batches + ``val_data.npz``; random
   pixels, since the conversion never looks at them) at three sizes, loose and (one size) inside
   the official zips, and converts each in a fresh process, timing it and reading the peak
   resident memory the conversion adds.  Time is extrapolated linearly to the real 1,281,167 +
   50,000 images; memory levels off (compare the sizes) because the conversion holds one block of
   ``BLOCK`` images at a time.
2. Reads the larger converted file through :func:`bsi.data.build_loader` with shuffled batches of
   256 (whole batches through ``__getitems__``) with 0 and 2 workers, against the per-item path a
   plain Dataset would take, a sequential (evaluation-order) pass, and h5py's fancy indexing.

Run: ``python -m benchmarks.data`` (about two minutes and 4 GB of temporary disk on 2 CPU cores); it\nwrites :data:`RESULTS`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import shutil
import tempfile
import time
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmarks.markdown import provenance, table
from bsi.atomic import write_json
from bsi.data import ResumableSampler, build_dataset, build_loader
from bsi.data.imagenet32 import BLOCK

REAL_IMAGES = 1_281_167 + 50_000

# Peak memory of the conversion alone: Linux resets the peak-RSS mark (VmHWM) to the current RSS
# when 5 is written to clear_refs, so the imports (torch) do not hide it.
CONVERT = """
import json, re, sys, time
from bsi.data import prepare
status = lambda key: int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
start = time.perf_counter()
prepare("imagenet32", sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "base_kib": base, "peak_kib": status("VmHWM")}))
"""


def fabricate(root: Path, per_batch: int, val: int, seed: int = 0) -> int:
    """Official-format npz files in ``root/imagenet32/``; returns the number of images written."""
    directory = root / "imagenet32"
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in [(f"train_data_batch_{i}.npz", per_batch) for i in range(1, 11)] + [("val_data.npz", val)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        extra = {"mean": data.mean(axis=0)} if name.startswith("train") else {}
        np.savez(directory / name, data=data, labels=rng.integers(1, 1001, n).tolist(), **extra)
    return 10 * per_batch + val


def zip_like_official(npz_root: Path, root: Path) -> None:
    """The same npz files inside ``Imagenet32_train_npz.zip`` and ``Imagenet32_val_npz.zip`` (deflated)."""
    (root / "imagenet32").mkdir(parents=True)
    for zip_name, folder, pattern in (("Imagenet32_train_npz.zip", "Imagenet32_train_npz/", "train_*.npz"),
                                      ("Imagenet32_val_npz.zip", "Imagenet32_val_npz/", "val_*.npz")):
        with zipfile.ZipFile(root / "imagenet32" / zip_name, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for path in sorted((npz_root / "imagenet32").glob(pattern)):
                z.write(path, folder + path.name)


def convert(root: Path) -> dict:
    """Convert in a fresh process so that its peak memory is the conversion's alone."""
    out = subprocess.run([sys.executable, "-c", CONVERT, str(root)], check=True, capture_output=True, text=True,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


class PerItem(Dataset):
    """The same images without ``__getitems__``: what a DataLoader does with a plain Dataset."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset[i]


def throughput(dataset, num_workers: int, batches: int, shuffle: bool = True, batch_size: int = 256) -> float:
    """Images per second over ``batches`` batches after a warm-up (worker start-up excluded)."""
    sampler = ResumableSampler(len(dataset), seed=0, shuffle=shuffle)
    it = build_loader(dataset, batch_size, sampler, num_workers=num_workers).forever()
    for _ in range(max(5, 2 * num_workers)):
        next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it))
    return n / (time.perf_counter() - start)


def fancy_indexing(path: Path, batches: int, batch_size: int = 256) -> float:
    """Reference: h5py's own fancy indexing with sorted indices, one call per batch, no loader."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path) as f:
        images = f["train/images"]
        start = time.perf_counter()
        for _ in range(batches):
            images[np.sort(rng.choice(len(images), batch_size, replace=False))]
        return batches * batch_size / (time.perf_counter() - start)


RESULTS = "benchmarks/results/data.json"


def render(results: dict) -> str:
    """Conversion time and memory per size, the time scaled to the real set, and loader throughput."""
    conv = results["conversion"]
    lines = [provenance(results), "",
             "ImageNet32 conversion (official npz format to uint8 HDF5; fabricated images, the conversion never "
             "looks at the pixels):", "",
             table(["source", "images", "seconds", "images/s", "memory beyond the interpreter"],
                   [(r["source"], f"{r['images']:,}", f"{r['seconds']:.1f}", f"{r['images'] / r['seconds']:,.0f}",
                     f"{(r['peak_kib'] - r['base_kib']) / 1024:.0f} MiB") for r in conv])]
    scaled = []
    for source in dict.fromkeys(r["source"] for r in conv):
        r = max((r for r in conv if r["source"] == source), key=lambda r: r["images"])
        scaled.append(f"{r['seconds'] * REAL_IMAGES / r['images'] / 60:.1f} min from {source}")
    lines += ["", f"Scaled linearly to the real {REAL_IMAGES:,} images: " + ", ".join(scaled) + ". The memory levels off "
              "instead of growing with the number of images: the conversion holds one block of images at a time.", "",
              f"Loader throughput, {results['loader_images']:,} images in HDF5 (page cache warm), batches of 256:", "",
              table(["read path", "workers", "images/s"],
                    [(r["path"], r["workers"], f"{r['images_per_s']:,.0f}") for r in results["loader"]])]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-batch", type=int, nargs="+", default=[2_048, 20_480, 61_440],
                   help="images per train batch file, one conversion per value (x10 train files)")
    p.add_argument("--val", type=int, default=5_000)
    p.add_argument("--zip-per-batch", type=int, default=20_480,
                   help="also convert the set of this --per-batch value from zips (0: skip)")
    p.add_argument("--batches", type=int, default=300, help="timed batches of 256 per loader setting")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory, removed after")
    p.add_argument("--out", type=Path, default=Path(RESULTS))
    args = p.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        rows = []
        for per_batch in args.per_batch:
            root = Path(tmp) / f"n{per_batch}"
            n = fabricate(root, per_batch, args.val)
            result = convert(root)
            rows.append({"source": "npz files", "images": n, **result})
            if per_batch == args.zip_per_batch:
                zip_like_official(root, Path(tmp) / "zip")
                rows.append({"source": "official zips", "images": n, **convert(Path(tmp) / "zip")})
                shutil.rmtree(Path(tmp) / "zip")
        print(rows, flush=True)

        dataset = build_dataset({"name": "imagenet32", "root": str(Path(tmp) / f"n{args.per_batch[-1]}")}, "train")
        settings = [
            ("batches via __getitems__, shuffled", dataset, 0, True),
            ("batches via __getitems__, shuffled", dataset, 2, True),
            ("per item (plain Dataset path), shuffled", PerItem(dataset), 0, True),
            ("batches via __getitems__, sequential (eval order)", dataset, 0, False),
        ]
        loader = []
        for label, ds, workers, shuffle in settings:
            rate = throughput(ds, workers, args.batches if ds is dataset else args.batches // 5, shuffle)
            loader.append({"path": label, "workers": workers, "images_per_s": rate})
            print(loader[-1], flush=True)
        loader.append({"path": "reference: h5py fancy indexing `images[sorted idx]`, shuffled, no loader", "workers": 0,
                       "images_per_s": fancy_indexing(dataset.images.path, args.batches // 10)})
        results = {"command": "python -m benchmarks.data", "measured": date.today().isoformat(),
                   "machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "block": BLOCK,
                   "conversion": rows, "loader_images": len(dataset), "loader": loader}
        write_json(args.out, results)
        print(render(results))


if __name__ == "__main__":
    main()
