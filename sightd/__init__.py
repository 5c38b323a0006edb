"""sightd: turn a camera into a stream of trustworthy label events."""

import os

from sightd.cpu import configure_openmp

# Before anything imports torch: libgomp reads its environment once, when it is loaded.
configure_openmp()
# Before anything imports cv2: OpenCV's own "[ WARN:0@...]" lines would reach the user beside
# sightd's one-line errors, which already say what failed. A user's setting is kept.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's "[tcp @ 0x...] ..." lines too

__version__ = "0.1.0"
