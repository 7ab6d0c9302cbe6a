"""The LLM environment (LE): an LLM adapted into item tokens, a state model and a reward model.

It runs offline, at training time only (DESIGN.md §1, §3). This package holds the language-model backend
(:mod:`learec.env.lm`: loading any causal LM, the offline default SmolLM2, tiny test models) and the
packed pass (:mod:`learec.env.packed`: every prefix state and every candidate of a user in one forward).
"""

from learec.env.lm import (DEFAULT_LLM_DIR, fetch_default_llm, load_causal_lm, tiny_llama,
                           tiny_tokenizer)
from learec.env.packed import PackedOutput, build_packed_layout, packed_forward, separate_forward

__all__ = ["DEFAULT_LLM_DIR", "PackedOutput", "build_packed_layout", "fetch_default_llm", "load_causal_lm",
           "packed_forward", "separate_forward", "tiny_llama", "tiny_tokenizer"]
