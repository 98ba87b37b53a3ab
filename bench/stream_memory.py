"""Peak memory of qffs-export and qffs-run on a large image folder: bounded by the batch, not the split.

    python bench/stream_memory.py [--images 50000] [--size 64]

Makes runs/stream/folder (5 classes of generated PNGs, `--images` of them in val/, the split
qffs-export and qffs-run read; 100 per class in train/), trains a small LeNet on it at
`--size` x `--size`, then measures the maximum resident set size (GNU time's) of:

- `qffs-export` (its fidelity run reads every val/ image),
- `qffs-run --dataset folder:... --backend qann` (every val/ image; the closed form, whose working
  memory per batch is small; the torch backend adds its batch's membranes and counts: `--backend
  torch` measures that),
- the in-memory path: the same split loaded as one tensor (`qffs.load_dataset`) and given to
  `qffs.run` with the same backend, as the tools did before they streamed.

Prints the figures and writes bench/stream_memory.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "stream"
BIN = Path(sys.executable).parent
CLASSES = 5

sys.path.insert(0, str(ROOT / "bench"))
from image_folder import make_image_folder  # noqa: E402

IN_MEMORY = """
import sys, qffs_lava as qffs
x, y = qffs.load_dataset("folder:" + sys.argv[1], "test", input_size=int(sys.argv[2]))
result = qffs.run(sys.argv[3], x, y, steps=8, backend=sys.argv[4], progress=False)
print(f"{len(x)} samples, accuracy {result.accuracy:.4f}")
"""


def peak(argv: list, label: str = "") -> dict:
    """Run argv under GNU time: its maximum resident set size in MiB, wall seconds, and output tail (the command
    as `label` where given)."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *map(str, argv)], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{done.stderr[-2000:]}")
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    command = label or " ".join(str(a).replace(str(ROOT) + "/", "") for a in argv)
    return {"command": command, "max_rss_mib": kib / 1024,
            "seconds": time.perf_counter() - started, "output": done.stdout.strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50000, help="images in val/ (default 50000)")
    parser.add_argument("--size", type=int, default=64, help="the images' side and the model's input size")
    parser.add_argument("--backend", default="qann", help="qffs-run's backend (default qann)")
    args = parser.parse_args()
    folder = RUNS / f"folder_{args.images}_{args.size}"
    if not (folder / "val").is_dir():
        print(f"making {folder} ({args.images} images)", flush=True)
        make_image_folder(folder, CLASSES, train=100, val=args.images // CLASSES, min_size=args.size,
                          max_size=args.size, progress=True)
    model, net = RUNS / f"lenet_{args.size}.pt", RUNS / f"lenet_{args.size}.h5"
    if not model.exists():
        subprocess.run([BIN / "qffs-train", "--dataset", f"folder:{folder}", "--arch", "lenet", "--input-size",
                        str(args.size), "--batch-size", "16", "--float-epochs", "4", "--qat-epochs", "2",
                        "--hardware-epochs", "0", "--quiet", "--out", model], check=True)
    figures = {"images": args.images, "size": args.size, "folder_bytes": sum(
        p.stat().st_size for p in (folder / "val").rglob("*.png")),
        "split_as_float32_mib": args.images * 3 * args.size * args.size * 4 / 2**20,
        "machine": f"{platform.machine()}, Python {platform.python_version()}"}
    figures["export"] = peak([BIN / "qffs-export", model, net])
    figures["run"] = peak([BIN / "qffs-run", net, "--dataset", f"folder:{folder}", "--steps", "8", "--backend",
                           args.backend, "--quiet"])
    figures["in_memory"] = peak([BIN / "python", "-c", IN_MEMORY, folder, args.size, net, args.backend],
                                "python: qffs.load_dataset(folder, 'test') as one tensor, then "
                                f"qffs.run(net, x, y, backend='{args.backend}')")
    for name in ("export", "run", "in_memory"):
        print(f"{name:10s} max RSS {figures[name]['max_rss_mib']:8.0f} MiB  ({figures[name]['seconds']:.0f} s)  "
              f"{figures[name]['command']}")
    print(f"the split as float32 tensors: {figures['split_as_float32_mib']:.0f} MiB")
    (ROOT / "bench" / "stream_memory.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("wrote bench/stream_memory.json")


if __name__ == "__main__":
    main()
