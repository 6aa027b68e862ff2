"""Models: shared layers (layers.py, heads.py), one module per family (decoder.py, encoder.py) and the registry of
families (registry.py: `registry.build(config.model)`, `registry.get(config.model.type)`)."""
