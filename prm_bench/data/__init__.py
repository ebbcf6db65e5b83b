"""Datasets: the embedded `shapes` generator and the PASCAL VOC / COCO readers."""
