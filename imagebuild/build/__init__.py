"""Building an image: the bake orchestration, the layer cache, one builder per layer (layers/), the launcher files, images from a directory, the Dockerfile export."""
