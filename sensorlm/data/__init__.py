"""Data for sensorlm: SYNTHETIC generators, caption text, shard writing and the streaming loader.

The wearable days (`synthetic_wearable`) and SST months (`synthetic_sst`) are synthetic: they are
drawn from hand-written models of physiology and ocean temperature, not measured from people or
satellites. They exist so that every part of the pipeline can be built, trained and tested without
private data. Submodules are imported on demand to keep ``import sensorlm.data`` cheap.
"""
