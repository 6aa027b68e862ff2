"""Performance: the FLOP model and peak rates (flops.py), what lm.bench measures (measure.py), the PyTorch reference
step (torch_gpt2.py), ahead-of-time compilation for TPU topologies (aot.py)."""
