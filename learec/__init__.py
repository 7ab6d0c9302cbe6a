"""learec: offline RL recommenders with a large language model as training environment."""

__version__ = "0.1.0"
