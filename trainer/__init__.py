"""The DiT backbone, the five arms (one file per family), token shards and the training loop."""
