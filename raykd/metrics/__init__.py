"""Evaluation metrics computed by raykd itself (no Ray, no torch): classification
(accuracy, macro-F1) and span extraction (SQuAD v2.0 exact match and F1)."""
