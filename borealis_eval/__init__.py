"""borealis-eval: ablation and evaluation harness for speech-LLMs."""

__version__ = "0.1.0"
