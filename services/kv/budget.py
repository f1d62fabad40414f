"""Exact KV-cache byte accounting and the tokens x bits plan under a memory budget.

"More Tokens, Lower Precision" (quantized pruning): at equal KV memory, keeping more tokens at
lower precision beats keeping fewer tokens at full precision, most of all on retrieval. The
default policy follows it: a budget that holds the whole cache at 8 bits keeps every token at
8 bits (near-lossless); a tighter one keeps as many tokens as fit at 4 bits; 2 bits only on
request. A budget that holds the full-precision cache is not compressed.

Layout of one KV head of one layer holding N tokens at b bits (group size G, residual R, a
multiple of G): the oldest Q = N - (N mod R) tokens are quantized, r = N mod R stay in full
precision (the residual window), so

    bytes(N) = Q*D*b/8 (key codes) + (Q/G)*D*2*2 (key fp16 scale+zero, per channel)
             + Q*D*b/8 (value codes) + Q*(D/G)*2*2 (value fp16 scale+zero, per token)
             + r*D*2*2 (residual keys and values at 16 bits)
             + N*4 (int32 positions of kept tokens, only when tokens are pruned).

At 16 bits nothing is quantized: bytes(N) = N*D*2*2 (+ N*4 when pruned). Totals multiply by
KV heads and sum over layers. Full-precision tokens are stored at 16 bits whatever the weights'
dtype (fp16 for float32 weights, see kv_cache.storage_dtype), so "16-bit" means 16 bits and
every comparison of bit widths is at equal memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from services.common.errors import InvalidInput
from services.kv.presses import PRESSES, Press
from services.kv.presses.adakv import DEFAULT_SAFEGUARD

INDEX_BYTES = 4
SCALE_BYTES = 2  # fp16 scale and zero point
FP16_BYTES = 2
MAX_BUDGET_TOKENS = 1e9  # far beyond any context; keeps the byte count a finite integer


@dataclass(frozen=True)
class CacheGeometry:
    num_layers: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, config: Any) -> CacheGeometry:
        """Layers, KV heads and head_dim of a transformers decoder config."""
        heads = config.num_attention_heads
        return cls(
            config.num_hidden_layers,
            getattr(config, "num_key_value_heads", None) or heads,
            getattr(config, "head_dim", None) or config.hidden_size // heads,
        )

    def token_bytes(self) -> int:
        """Bytes of one 16-bit token across all layers and KV heads, keys and values."""
        return self.num_layers * self.num_kv_heads * self.head_dim * 2 * FP16_BYTES


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 16
    group_size: int = 32
    residual_length: int = 32

    def validate(self, head_dim: int) -> QuantSpec:
        if self.bits not in (2, 4, 8, 16):
            raise InvalidInput("kv.bits", "must be 16, 8, 4 or 2")
        if self.bits == 16:
            return self
        if self.group_size <= 0 or head_dim % self.group_size:
            raise InvalidInput("kv.group_size", f"must divide head_dim {head_dim}")
        if self.residual_length <= 0 or self.residual_length % self.group_size:
            raise InvalidInput(
                "kv.residual_length", f"must be a positive multiple of group_size {self.group_size}"
            )
        return self


def head_bytes(tokens: int, spec: QuantSpec, head_dim: int, pruned: bool) -> int:
    """Bytes of one KV head of one layer holding `tokens` tokens (see the module docstring)."""
    index = tokens * INDEX_BYTES if pruned else 0
    if spec.bits == 16:
        return tokens * head_dim * 2 * FP16_BYTES + index
    residual = tokens % spec.residual_length
    quantized = tokens - residual
    codes = 2 * quantized * head_dim * spec.bits // 8
    key_params = (quantized // spec.group_size) * head_dim * 2 * SCALE_BYTES
    value_params = quantized * (head_dim // spec.group_size) * 2 * SCALE_BYTES
    return codes + key_params + value_params + residual * head_dim * 2 * FP16_BYTES + index


def cache_bytes(
    tokens_per_layer: list[int], spec: QuantSpec, geometry: CacheGeometry, pruned: bool
) -> int:
    return geometry.num_kv_heads * sum(
        head_bytes(n, spec, geometry.head_dim, pruned) for n in tokens_per_layer
    )


def max_tokens(
    budget: int, spec: QuantSpec, geometry: CacheGeometry, limit: int, pruned: bool
) -> int:
    """The largest N <= limit with bytes(N) <= budget (every layer holding N tokens).

    bytes(N) is linear within a residual block and drops when a block is quantized, so the
    search walks blocks from the top: in block k, N = k*R + r with r < R.
    """
    layers = geometry.num_layers

    def total(n: int) -> int:
        return cache_bytes([n] * layers, spec, geometry, pruned)

    if total(limit) <= budget:
        return limit
    if spec.bits == 16:
        per_token = total(1)
        return min(limit, budget // per_token)
    block = spec.residual_length
    low, high = 0, limit // block  # total(k * block) grows with k: binary search the block
    if total(0) > budget:
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if total(middle * block) <= budget:
            low = middle
        else:
            high = middle - 1
    base = low * block
    step = total(base + 1) - total(base) if base + 1 <= limit else 0
    room = (budget - total(base)) // step if step else 0
    return min(limit, base + min(block - 1, room))


def decode_capacity(budget: int, spec: QuantSpec, geometry: CacheGeometry, config: KVConfig) -> int:
    """Tokens per layer that decode-time eviction may hold within `budget` bytes.

    16-bit: the largest N with bytes(N) <= budget; one token leaves per decoded token. b-bit:
    single tokens cannot leave a quantization group, so eviction removes whole G-token groups
    of the quantized history when a residual block is flushed. The cache then holds at most
    C = k*R quantized tokens plus a residual of at most R - 1, and the capacity is the largest
    k*R + R - 1 with bytes <= budget. Eviction needs a quantized group it may remove beyond
    the newest block (and beyond the sink groups for StreamingLLM).
    """
    layers = geometry.num_layers

    def total(n: int) -> int:
        return cache_bytes([n] * layers, spec, geometry, pruned=True)

    if spec.bits == 16:
        capacity = budget // total(1)
        if capacity < config.min_tokens():
            raise InvalidInput(
                "kv.budget_bytes",
                f"{budget} bytes hold {capacity} 16-bit tokens; {config.method} "
                f"needs at least {config.min_tokens()}",
            )
        return capacity
    block, group = spec.residual_length, spec.group_size
    protected = config.protected_groups(group) * group
    least = -(-(protected + group) // block)  # blocks of quantized history
    low, high = 0, budget // max(1, total(block)) + 1
    while low < high:  # the largest k with total(k*R + R - 1) <= budget
        middle = (low + high + 1) // 2
        if total(middle * block + block - 1) <= budget:
            low = middle
        else:
            high = middle - 1
    if low < least:
        raise InvalidInput(
            "kv.budget_bytes",
            f"decode-time eviction at {spec.bits} bits removes {group}-token groups; "
            f"{budget} bytes hold {low} quantized blocks of {block} tokens plus the "
            f"residual, it needs {least} (raise the budget or lower group_size/residual_length)",
        )
    return low * block + block - 1


@dataclass
class KVPlan:
    method: str
    bits: int
    tokens_per_layer: list[int]
    sequence_length: int
    bytes: int
    bytes_full: int
    spec: QuantSpec
    reason: str
    layer_budgets_note: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    decode_tokens: list[int] = field(default_factory=list)  # compress_decode: capacity per layer

    @property
    def tokens_kept(self) -> int:
        """Tokens per layer (the mean, rounded down, for per-layer budgets)."""
        return sum(self.tokens_per_layer) // max(1, len(self.tokens_per_layer))

    @property
    def pruned(self) -> bool:
        """Tokens are evicted (at prefill, or while decoding), so positions are stored."""
        return bool(self.decode_tokens) or any(
            n < self.sequence_length for n in self.tokens_per_layer
        )


def budget_in_bytes(
    geometry: CacheGeometry, budget_bytes: int = 0, budget_fp16_tokens: float = 0.0
) -> int:
    if budget_bytes < 0:
        raise InvalidInput("kv.budget_bytes", "must be positive")
    if not 0 <= budget_fp16_tokens <= MAX_BUDGET_TOKENS:  # also NaN and inf
        raise InvalidInput(
            "kv.budget_fp16_tokens", f"must be a number in 0..{MAX_BUDGET_TOKENS:.0e}"
        )
    if budget_fp16_tokens:
        return int(budget_fp16_tokens * geometry.token_bytes())
    return budget_bytes


METHODS = ("none", *PRESSES)  # none: quantization only, every token kept


@dataclass(frozen=True)
class KVConfig:
    """One request's KV compression (the KVCompression message, validated)."""

    method: str = "none"
    bits: int = 0  # 0: the budget policy chooses; 16 | 8 | 4 | 2 override it
    budget_bytes: int = 0
    budget_fp16_tokens: float = 0.0
    group_size: int = 32
    residual_length: int = 32
    window_size: int = 0  # SnapKV/PyramidKV observation window; 0: 32
    kernel_size: int = 7  # SnapKV pooling kernel
    pooling: str = "avgpool"  # avgpool | maxpool
    sink_tokens: int = 4  # StreamingLLM attention sinks
    recent_ratio: float = 0.5  # H2O: share of the budget (and of the decode capacity) kept recent
    pyramid_beta: int = 20  # PyramidKV: top layer keeps avg/beta tokens
    query_aware: bool = True  # SnapKV: observation window includes the question
    question_tokens: int = 0  # trailing prompt tokens that form the question
    compress_decode: bool = False
    adakv: bool = False  # AdaKV: share each layer's budget across KV heads by their scores
    adakv_safeguard: float = DEFAULT_SAFEGUARD  # AdaKV alpha: share of B each head keeps first

    def validate(self, head_dim: int) -> KVConfig:
        if self.method not in METHODS:
            raise InvalidInput(
                "kv.method", f"unknown method {self.method!r}; one of {', '.join(METHODS)}"
            )
        if self.bits not in (0, 2, 4, 8, 16):
            raise InvalidInput("kv.bits", "must be 0 (policy), 16, 8, 4 or 2")
        if self.method != "none" and not (self.budget_bytes or self.budget_fp16_tokens):
            raise InvalidInput(
                "kv.budget", f"method {self.method} needs budget_bytes or budget_fp16_tokens"
            )
        if self.kernel_size <= 0 or self.kernel_size % 2 == 0:
            raise InvalidInput("kv.kernel_size", "must be a positive odd number")
        if self.pooling not in ("avgpool", "maxpool"):
            raise InvalidInput("kv.pooling", "must be avgpool or maxpool")
        if self.sink_tokens < 0 or self.window_size < 0 or self.question_tokens < 0:
            raise InvalidInput("kv.window_size", "sink, window and question sizes must be >= 0")
        if self.pyramid_beta < 1:
            raise InvalidInput("kv.pyramid_beta", "must be >= 1")
        if not 0 < self.recent_ratio <= 1:  # also NaN
            raise InvalidInput("kv.recent_ratio", "must be in (0, 1]")
        if self.compress_decode and not (self.press and self.press.decodes):
            raise InvalidInput(
                "kv.compress_decode",
                "decode-time compression is defined for streamingllm and h2o "
                "(SnapKV and PyramidKV compress the prompt only)",
            )
        if self.adakv and not (self.press and self.press.scored):
            raise InvalidInput(
                "kv.adakv",
                "AdaKV shares a layer's budget by token scores: use snapkv, pyramidkv or h2o",
            )
        if self.adakv and self.compress_decode:
            raise InvalidInput("kv.adakv", "AdaKV budgets the prompt; drop compress_decode")
        if not 0 <= self.adakv_safeguard <= 1:  # also NaN
            raise InvalidInput("kv.adakv_safeguard", "must be in [0, 1]")
        # bits 0 lets the policy quantize, so the group settings must hold for it too
        QuantSpec(self.bits or 4, self.group_size, self.residual_length).validate(head_dim)
        return self

    @property
    def press(self) -> Press | None:
        """The method's press (None for `none`)."""
        return PRESSES.get(self.method)

    @property
    def window(self) -> int:
        return self.window_size or (self.press.default_window if self.press else 0)

    def protected_groups(self, group_size: int) -> int:
        """Leading quantization groups that b-bit decode eviction never removes."""
        return self.press.protected_groups(self, group_size) if self.press else 0

    def min_tokens(self) -> int:
        """Fewest tokens the method can keep."""
        return self.press.min_tokens(self) if self.press else 1


def plan_kv(config: KVConfig, sequence_length: int, geometry: CacheGeometry) -> KVPlan:
    """Chooses bits and tokens per layer for a prompt of sequence_length tokens."""
    config = config.validate(geometry.head_dim)
    if sequence_length <= 0:
        raise InvalidInput("sequence_length", "must be positive")
    layers = geometry.num_layers
    full = cache_bytes([sequence_length] * layers, QuantSpec(16), geometry, pruned=False)
    budget = budget_in_bytes(geometry, config.budget_bytes, config.budget_fp16_tokens)

    def spec(bits: int) -> QuantSpec:
        return QuantSpec(bits, config.group_size, config.residual_length)

    def fits_all(bits: int) -> bool:
        return cache_bytes([sequence_length] * layers, spec(bits), geometry, False) <= budget

    if not budget:
        bits = config.bits or 16
        used = cache_bytes([sequence_length] * layers, spec(bits), geometry, False)
        reason = "no budget: " + ("uncompressed" if bits == 16 else f"{bits}-bit, every token")
        return KVPlan(
            config.method,
            bits,
            [sequence_length] * layers,
            sequence_length,
            used,
            full,
            spec(bits),
            reason,
        )
    if config.bits:
        bits = config.bits
        reason = f"{bits}-bit requested"
    elif budget >= full:
        bits, reason = 16, "budget holds the full cache: uncompressed"
    elif fits_all(8):
        bits, reason = 8, "loose budget: every token at 8 bits"
    else:
        bits, reason = 4, "tight budget: more tokens at 4 bits"
    if config.compress_decode:
        try:
            capacity = decode_capacity(budget, spec(bits), geometry, config)
        except InvalidInput:
            if config.bits or bits == 16:
                raise
            bits, reason = 16, "budget below whole quantization groups: 16-bit, pruning only"
            capacity = decode_capacity(budget, spec(bits), geometry, config)
        tokens = [min(sequence_length, capacity)] * layers
        used = cache_bytes(tokens, spec(bits), geometry, pruned=True)
        reason += (
            f"; keeps {tokens[0]} of {sequence_length} tokens per layer, and at most "
            f"{capacity} while decoding"
        )
        return KVPlan(
            config.method,
            bits,
            tokens,
            sequence_length,
            used,
            full,
            spec(bits),
            reason,
            decode_tokens=[capacity] * layers,
        )
    if fits_all(bits):
        tokens = [sequence_length] * layers
    else:
        if config.method == "none":
            raise InvalidInput(
                "kv.budget_bytes",
                f"{budget} bytes cannot hold {sequence_length} "
                f"tokens at {bits} bits; choose a pruning method",
            )
        kept = max_tokens(budget, spec(bits), geometry, sequence_length, pruned=True)
        if kept < config.min_tokens():
            raise InvalidInput(
                "kv.budget_bytes",
                f"{budget} bytes keep {kept} tokens at {bits} "
                f"bits; {config.method} needs at least {config.min_tokens()}",
            )
        tokens = config.press.layer_budgets(kept, layers, config, sequence_length)
        while cache_bytes(tokens, spec(bits), geometry, True) > budget:
            largest = max(tokens)  # trim the deepest of the largest: stays non-increasing
            tokens[len(tokens) - 1 - tokens[::-1].index(largest)] -= 1
        reason += f"; keeps {sum(tokens) // layers} of {sequence_length} tokens per layer"
    pruned = any(n < sequence_length for n in tokens)
    used = cache_bytes(tokens, spec(bits), geometry, pruned)
    return KVPlan(config.method, bits, tokens, sequence_length, used, full, spec(bits), reason)


@dataclass(frozen=True)
class PromptPlan:
    """A request's prompt, split for its compression, and the plan of its cache.

    Query-agnostic compression (query_aware False, question_tokens q > 0) compresses the
    context prompt_ids[:-q] alone; the q question tokens are read through the compressed cache
    afterwards, so the compression cannot know what will be asked."""

    context_ids: list[int]  # prefilled and compressed
    question_ids: list[int]  # read one per step through the compressed cache
    config: KVConfig
    plan: KVPlan

    @property
    def prompt_tokens(self) -> int:
        return len(self.context_ids) + len(self.question_ids)


def plan_prompt(config: KVConfig, prompt_ids: list[int], geometry: CacheGeometry) -> PromptPlan:
    """The one entry from a request's KV settings to a planned cache (InvalidInput on bad
    settings)."""
    question: list[int] = []
    if not config.query_aware and config.question_tokens:
        if config.question_tokens >= len(prompt_ids):
            raise InvalidInput("kv.question_tokens", "must be shorter than the prompt")
        question = prompt_ids[-config.question_tokens :]
        prompt_ids = prompt_ids[: -config.question_tokens]
        config = replace(config, question_tokens=0)
    return PromptPlan(prompt_ids, question, config, plan_kv(config, len(prompt_ids), geometry))
