"""A trained model put to use: a checkpoint's model built from trusted targets only, evaluated, asked for
predictions, or exported.

trained_model (a checkpoint or an export read as a stranger's, its model built), trust (which `_target_`s a file
may name), evaluation (`evaluate`), prediction (`predict`), export (`train-export`)."""

__all__ = ["evaluation", "export", "prediction", "trained_model", "trust"]
