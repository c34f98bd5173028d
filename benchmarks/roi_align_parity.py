"""RoI-Align parity: `hf_contrastive.vision.dense.roi_align` against torchvision's own pure-PyTorch reference.

torchvision's compiled ops do not load beside this repository's CPU torch build, so the comparison reads the
pure-PyTorch `_roi_align` that torchvision ships for `torch.compile` and MPS (`torchvision/ops/roi_align.py`)
from the installed package's source, without importing torchvision, and runs both on random maps and boxes in
float64: boxes inside the map, both `aligned` settings, fixed and adaptive sampling, several output sizes and
scales. (For samples more than one cell outside the map, torchvision's C++ kernel counts them as zeros and its
pure-PyTorch version clamps them to the border; ours follows the C++ kernel, which is checked by hand in
`tests/vision/test_dito.py`, so boxes whose samples reach beyond the map are left out here.)

    pip download --no-deps torchvision -d /tmp/tv    # any recent wheel; only one source file is read from it
    python benchmarks/roi_align_parity.py --source /tmp/tv/torchvision-*.whl

`--source` also takes an unpacked torchvision folder; without it, an installed torchvision's folder is used.
It prints the largest difference and exits 1 above 1e-12.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import zipfile
from pathlib import Path

import torch

from hf_contrastive.vision.dense.roi_align import roi_align


def read_source(where: str | None) -> tuple[str, str]:
    """torchvision's `ops/roi_align.py` text from a wheel, a package folder or the installed package."""
    if where is None:
        spec = importlib.util.find_spec("torchvision")
        if spec is None or spec.origin is None:
            sys.exit("no torchvision: pass --source (a torchvision wheel or folder).")
        where = str(Path(spec.origin).parent)
    path = Path(where)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return wheel.read("torchvision/ops/roi_align.py").decode("utf-8"), str(path)
    folder = path / "torchvision" if (path / "torchvision").is_dir() else path
    return (folder / "ops" / "roi_align.py").read_text(), str(folder)


def torchvision_reference(where: str | None):
    source, origin = read_source(where)
    body = source[source.index("def _bilinear_interpolate(") : source.index("@torch.fx.wrap")]
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(body.replace("@lazy_compile(dynamic=True)\n", ""), namespace)
    return namespace["_roi_align"], origin


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default=None, help="a torchvision wheel or package folder")
    reference, origin = torchvision_reference(parser.parse_args().source)
    generator = torch.Generator().manual_seed(0)
    worst, cases = 0.0, 0
    for trial in range(200):
        height, width = (int(v) for v in torch.randint(4, 12, (2,), generator=generator))
        maps = torch.randn(2, 3, height, width, dtype=torch.float64, generator=generator)
        scale = (1.0, 0.5, 0.25)[trial % 3]
        extent = torch.tensor([width / scale, height / scale], dtype=torch.float64)
        # Boxes inside the image and at least one cell wide, so that no sample leaves the map (see above: with
        # aligned=False a narrower box is widened to one cell and its samples can cross the border).
        cell = 1.0 / scale
        corner = torch.rand(6, 2, dtype=torch.float64, generator=generator) * (extent - cell)
        side = cell + torch.rand(6, 2, dtype=torch.float64, generator=generator) * (extent - corner - cell)
        far = corner + side
        index = torch.randint(0, 2, (6, 1), generator=generator).double()
        boxes = torch.cat([index, corner, far], 1)
        for aligned in (True, False):
            for sampling in (-1, 1, 2):
                for out in ((2, 2), (3, 2), (1, 1), (4, 3)):
                    ours = roi_align(maps, boxes, out, scale, sampling, aligned)
                    theirs = reference(maps, boxes, scale, out[0], out[1], sampling, aligned)
                    worst = max(worst, float((ours - theirs).abs().max()))
                    cases += 1
    print(f"torchvision source: {origin}")
    print(f"{cases} cases (200 maps x 6 boxes, aligned x sampling x output size), float64")
    print(f"largest absolute difference: {worst:.3e}")
    sys.exit(0 if worst < 1e-12 else 1)


if __name__ == "__main__":
    main()
