"""Grad-CAM: where in the picture the network found the class it chose.

gradcam.py computes the maps and draws them over the picture; commands.py is `sightd explain`;
the console's button is served by sightd/web/explain_routes.py, and eval's grid of mistakes
uses the same maps.
"""
