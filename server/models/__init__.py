"""The models behind the processor, and how they are chosen and loaded.

- `registry`: one row per SAM_MODEL_TYPE (family module, config, checkpoint, memory per cached image);
- `seam`: what the processor asks of a model (`SegmentationModel`) and of a family module (`Family`);
- `caching_model`: the embedding cache, batching and decode loop every family shares (`CachingModel`);
- `embedding_cache`: the cache itself;
- `device`: SAM_DEVICE, TORCH_THREADS and PRECISION, resolved for this machine;
- `checkpoint_file`: the checkpoint's start-up check and the errors a person reads;
- `loading`: `load_model` by type, importing only that type's family;
- the families: `sam1` (segment-anything) and `sam2` (SAM 2.1, Meta's sam2 package).

Nothing is imported here, so that the settings can read the registry without torch.
"""
