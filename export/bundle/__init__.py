"""The export folder as a bundle a target can use with nothing but a runtime: metadata, golden vectors, run.py,
TensorRT build scripts, a Triton repository and the model card (docs/DEPLOY.md)."""
