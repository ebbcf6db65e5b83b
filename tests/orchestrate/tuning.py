"""The small study the tuning tests share: a config with a search section, its data."""

SEARCH = {
    "retrieval.alpha": {"low": 0.2, "high": 3.0, "log": True},
    "retrieval.confidence": {"choices": ["retrieval", "class"]},
}


def config_for(root, search=SEARCH) -> dict:
    return {
        "data": {"name": "shapes", "root": str(root), "tune_split": "tune"},
        "backbone": {"name": "test_resnet"},
        "train": {"epochs": 1, "batch_size": 8},
        "infer": {"upsample": 1, "max_peaks": 4},
        "eval": {"metrics": ["voc-map", "abo"]},
        "run": {"name": "study"},
        "grid": {"retrieval.terms": ["full", "no-instance"]},
        "search": search,
    }
