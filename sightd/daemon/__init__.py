"""The supervisor: starts, watches and restarts every sightd process (`sightd run`)."""
