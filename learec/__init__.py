"""learec: offline RL recommenders with a large language model as training environment."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy: `import learec` stays cheap (no torch) until the serving model is asked for.
    if name == "Recommender":
        from learec.serve.recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'learec' has no attribute {name!r}")
