"""The pipeline stages (DESIGN 5): train -> infer -> retrieve -> evaluate.

Each stage reads the previous stage's files from the store and writes its own; its key
hashes only the config fields it depends on (see `keys`).
"""
