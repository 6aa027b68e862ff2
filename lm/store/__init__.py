"""What a run leaves on disk: orbax checkpoints (checkpoint.py), init_from's parameters (pretrained.py), the workdir
files and inference loading (workdir.py), metric writers and metrics.jsonl (writers.py), and the one path layer
for local and gs:// paths (paths.py)."""
