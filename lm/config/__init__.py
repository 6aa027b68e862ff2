"""Configs: the schema with every key (base.py), validation (validation.py) and the rules of saved configs and
resumes (resume.py). Experiment files in configs/ import `lm.config.base`; lm never imports configs/."""
