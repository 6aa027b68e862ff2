"""Hugging Face interop: architectures (architectures.py and one module per layout: gpt2.py, bert.py, llama.py; rules
in rules.py), safetensors reading and writing (safetensors_io.py), conversion to and from workdirs (convert.py)."""
