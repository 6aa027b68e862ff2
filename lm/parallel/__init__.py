"""Parallelism: the device mesh, logical axis rules and shardings (sharding.py); jax.distributed start-up
(distributed.py)."""
