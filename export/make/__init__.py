"""Making artefacts: ONNX, INT8 and QAT files, each behind its gate (``cakd export``)."""
