"""kiln's KV-cache compression library, below `services.llm` (it imports nothing above it).

- `budget`: the byte formula, the per-method minimum budgets and `plan_kv` (the planner);
- `quant`: KIVI-style group quantization of keys (per channel) and values (per token);
- `presses/`: the token-selection methods (StreamingLLM, H2O, SnapKV, PyramidKV);
- `cache`: the compressed cache transformers' attention reads and writes;
- `decoder`: prefill with compression, then batched decoding over compressed caches;
- `batching`: continuous batching of sequences onto one decoder thread.
"""

# One decoded token: its id, its log-prob, and (when asked for) the step's most likely tokens
# as (id, log-prob) pairs, most likely first.
TokenStep = tuple[int, float, tuple[tuple[int, float], ...]]
