"""Training: the train state and the one step (state.py, step.py), the loop (loop.py) and the periodic actions it
calls (hooks.py), the optimizer (optim.py), the progress line (progress.py) and SIGTERM handling (preemption.py)."""
