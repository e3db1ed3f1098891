"""ofa-eval: honest, reproducible zero-shot cross-lingual transfer evaluation.

The statistics path (store, protocol, sql, check, grid) imports neither torch nor
transformers; only the producers and the averaging/materializing commands do.
"""

__version__ = "0.1.0"
