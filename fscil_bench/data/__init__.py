"""Image data: arrays, batched transforms, checksummed caches and the built-in glyph dataset."""
