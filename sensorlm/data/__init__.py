"""Data for sensorlm: the user's recordings in, captioned windows out, streamed to training.

The main path is a user's own device export: `device_import` (with `formats/` for vendor files)
resamples and windows the recordings, `captioner` computes each window's captions from whatever
channels it has, `folds` and the import's stratified split hold data out, `schema` and `shards`
write Parquet and webdataset shards with a manifest, `tokenizer` learns the caption vocabulary,
and `loader` (with `augment`) streams batches to every rank. `embedding_pairs` holds paired
embeddings for ProjectionCL.

The synthetic generators in `synthetic/` (`wearable` with `vocab` and `captions`, `sst`,
`device`) are for demos and tests: drawn from hand-written models of
physiology and ocean temperature, not measured from people or satellites, and nothing on the main
path depends on their channels or vocabulary. Submodules are imported on demand to keep
``import sensorlm.data`` cheap.
"""
