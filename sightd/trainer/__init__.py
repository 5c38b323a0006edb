"""Offline half: folder-per-class images in, a self-describing checkpoint out."""
