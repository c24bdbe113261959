"""The run directory: the one handshake between training and everything after it.
`directory.RunDir` (its files), `record.RunRecord` (summary.json, its only writer),
`loading.load_run` (its model with the trained weights), `notebook` (how a run shows in Jupyter)."""
