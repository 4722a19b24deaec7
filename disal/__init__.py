"""disal: Dynamic Influence Scoring for Active Learning, and the engine behind the Label Studio backend.

Importable without Label Studio or Flask. The math lives in `disal.strategies` (pure functions over
arrays); the only code that talks to Hugging Face models is `disal.training.adapter`.
"""

__version__ = "0.1.0"
