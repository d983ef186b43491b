"""The built-in architecture catalogue and its offline tokenizer (bottom layer, pure data).

``architectures`` (names, shapes, parameter counts, lookups, local ``config.json`` shapes),
``data`` (the catalogue's configs) and ``tokenizer`` (the shipped byte-level BPE that
random-weight models use). Config validation, datasets, memory estimates and the backends all
read it, so it sits below ``config`` (docs/ARCHITECTURE.md); it imports only ``exceptions``.
"""
