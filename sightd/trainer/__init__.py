"""Offline half: folder-per-class images (recorded by `collect`) in, a self-describing
checkpoint out."""
