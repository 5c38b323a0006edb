"""Engines: what runs the network for the worker (torch, ONNX Runtime, OpenVINO); see base.py."""
