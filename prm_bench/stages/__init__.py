"""The pipeline stages (DESIGN 5): train -> infer -> retrieve -> evaluate.

Each stage reads the previous stage's files from the store and writes its own; its key
hashes only the config fields it depends on (`config.keys.stage_keys`). Every stage has one
contract, `run(config, store, keys, device) -> Path` (its folder in the store), and
`RUNNERS` (`stages.runners`) maps a stage name to it, in DAG order, so the runner makes
one call. This package imports nothing: the modules that plan a run read the store
(`stages.store`) and a cell's splits (`stages.splits`) without torch.

A stage whose cells gain from running together also has an entry in `GROUPED`: what
cells must share to be grouped (from their keys), and `run_cells(configs, store, keys,
device) -> [None or the error of each cell]`.
"""
