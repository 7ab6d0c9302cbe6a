"""The LLM environment (LE): an LLM adapted into item tokens, a state model and a reward model.

It runs offline, at training time only (docs/design.md §1.3, §1.5). Modules, in pipeline order:

- :mod:`learec.env.lm`: loading any causal LM (local dir, GGUF, hub name), the offline default SmolLM2;
- :mod:`learec.env.packed`: every prefix state and every candidate of a user in one forward pass;
- :mod:`learec.env.item_tokens`: one learned input embedding per item (textual inversion, LM frozen);
  :mod:`learec.env.token_store`: finished item tokens, shared by every LE run;
- :mod:`learec.env.model` / :mod:`learec.env.train`: LoRA + state projection + reward head, trained
  on a subset of users with a sampled-softmax state loss and a Bradley–Terry reward loss;
  :mod:`learec.env.curve`: its learning curve (validation state NDCG@10 against steps);
- :mod:`learec.env.label`: the labelling cache RL training reads; :mod:`learec.env.report`: LE quality;
- :mod:`learec.env.run`: the stages of an LE run directory (``learec env train|label|report``).
"""

from learec.env.lm import (DEFAULT_LLM_DIR, fetch_default_llm, load_causal_lm, tiny_llama,
                           tiny_tokenizer)
from learec.env.packed import PackedOutput, build_packed_layout, packed_forward, separate_forward

__all__ = ["DEFAULT_LLM_DIR", "PackedOutput", "build_packed_layout", "fetch_default_llm", "load_causal_lm",
           "packed_forward", "separate_forward", "tiny_llama", "tiny_tokenizer"]
