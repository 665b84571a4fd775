"""A trained model put to use: a checkpoint's model built from trusted targets only, evaluated, asked for
predictions, or exported.

trained_model (a checkpoint or an export read as a stranger's, its model built), trust (which `_target_`s a file
may name), evaluation (`evaluate`), prediction (`predict`), export (`train-export`), graph_export (its ONNX and
TorchScript formats)."""

__all__ = ["evaluation", "export", "graph_export", "prediction", "trained_model", "trust"]
