"""Demo and test data, generated: wearable days (`wearable`, with its channel list and vocabulary in
`vocab` and its captions in `captions`), SST months (`sst`) and device exports in the user's own
form (`device`). Drawn from hand-written models of physiology and ocean temperature, not measured
from people or satellites; nothing on the user's path (``sensorlm import``, the captioner, the
loader) depends on their channels or vocabulary."""
