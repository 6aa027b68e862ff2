"""Inference on a trained model: KV-cache sampling (sampling.py), text generation for prompts (generation.py),
scoring texts (scoring.py), filling masks (fill_mask.py)."""
