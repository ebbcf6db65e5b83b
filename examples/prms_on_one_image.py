"""Peak response maps of one image and the instances retrieval picks for them.

    python examples/prms_on_one_image.py [IMAGE] [--weights model.safetensors]

Without IMAGE a shapes image is drawn; without --weights the network is random (the
maps are then meaningless, but every step runs). A trained model is in a run's store:
`runs/<name>/store/train/<key>/model.safetensors` (its classes in `log.json`).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from prm_bench.data.shapes import ShapesSpec, draw_image
from prm_bench.instances.proposals.embedded import embedded_proposals
from prm_bench.instances.retrieval import retrieve
from prm_bench.model.backbones import build_classifier
from prm_bench.model.backprop import peak_response_maps
from prm_bench.model.peaks import class_scores, find_peaks, select_peaks
from prm_bench.stages.inputs import image_tensor


def main() -> None:
    """Print each retrieved instance: its class, score and area."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image", nargs="?", help="an RGB image file (default: a shapes image)")
    parser.add_argument("--weights", help="a trained model.safetensors")
    parser.add_argument("--classes", type=int, default=5, help="classes of that model")
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.image:
        picture = np.asarray(Image.open(args.image).convert("RGB"))
    else:
        picture = draw_image(ShapesSpec(size=args.size), 0)[0]
    model = build_classifier(args.backbone, args.classes, weights=args.weights).eval()
    image = image_tensor(picture, args.size)  # resized, uint8: the model normalises itself
    with torch.no_grad():
        maps = model(image)
        scores = class_scores(maps, "peak", upsample=1)
    peaks = find_peaks(maps, upsample=1)
    peaks = select_peaks(peaks, maps, scores, class_threshold=0, peak_threshold=0, upsample=1)
    if not len(peaks):  # a random network may find nothing above 0: take the strongest
        peaks = find_peaks(maps, upsample=1)[:4]
    prms = peak_response_maps(model, image, peaks[:8], upsample=1)
    proposals, _ = embedded_proposals(np.asarray(Image.fromarray(picture).resize((args.size,) * 2)))
    found = retrieve(prms.numpy(), peaks[:8].numpy(), maps.numpy(), proposals, {"terms": "full"})
    print(f"{len(peaks)} peaks, {len(proposals)} proposals, {len(found)} instances")
    for instance in found:
        area = int(np.asarray(instance["mask"]).sum())
        print(f"  class {instance['class']}: score {instance['score']:.3f}, {area} px")


if __name__ == "__main__":
    main()
