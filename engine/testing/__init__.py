"""Test support shipped with the engine: checkpoint folders (and engines) with random weights.

The tests build tiny ones; the benchmarks and the GPU check build full-size
ones (``random_checkpoints``: the original layout; ``converted_checkpoints``:
transformers' converted layout).
"""
