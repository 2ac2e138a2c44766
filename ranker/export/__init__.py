"""Exporting trained models to ONNX."""
