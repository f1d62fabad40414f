"""Hand-computed checks of the trainer's methods: DPO, BMC, Flat-LoRA, RISE, TATA."""

import math
import random

import pytest
import torch

from services.common.errors import InvalidInput
from services.llm.scripted import ScriptedBackend
from services.trainer.core import bmc, rise, tata
from services.trainer.core.dpo import DPOConfig, dpo_loss, weighted_logps
from services.trainer.core.flat_lora import FlatLoRA, FlatLoRAConfig, merged_weight, ramp
from services.trainer.core.training import TrainConfig


def test_dpo_loss_by_hand() -> None:
    out = dpo_loss(
        torch.tensor([-10.0]),
        torch.tensor([-12.0]),
        torch.tensor([-11.0]),
        torch.tensor([-11.5]),
        DPOConfig(beta=0.1),
    )
    # beta * ((-10 + 11) - (-12 + 11.5)) = 0.15; -log sigmoid(0.15) = log(1 + e^-0.15)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.15)), abs=1e-6)
    assert out.loss.item() == pytest.approx(0.62096, abs=1e-5)
    assert out.chosen_rewards.item() == pytest.approx(0.1)
    assert out.rejected_rewards.item() == pytest.approx(-0.05)
    assert out.metrics()["rewards/accuracy"] == 1.0


def test_bmc_weights_by_hand() -> None:
    logps = torch.log(torch.tensor([[0.9, 0.05, 0.5, 0.001]]))
    mask = torch.tensor([[0, 1, 1, 1]])
    assert bmc.token_weights(logps, mask, delta=2.0).tolist() == [
        pytest.approx([1.0, 3.0, 3.0, 3.0])
    ]
    assert bmc.token_weights(logps, mask, delta=0.0).tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert bmc.token_weights(logps, mask, delta=100.0)[0, 2].item() == pytest.approx(3.0)


def test_bmc_with_delta_zero_is_dpo() -> None:
    policy = torch.log(torch.tensor([[0.2, 0.3], [0.6, 0.1]]))
    reference = torch.log(torch.tensor([[0.25, 0.3], [0.5, 0.2]]))
    weights = bmc.token_weights(policy, torch.ones(2, 2), delta=0.0)
    plain = dpo_loss(
        policy[0:1].sum(-1),
        policy[1:].sum(-1),
        reference[0:1].sum(-1),
        reference[1:].sum(-1),
        DPOConfig(),
    )
    weighted_p = weighted_logps(policy, weights)
    weighted_r = weighted_logps(reference, weights)
    bmc_out = dpo_loss(weighted_p[:1], weighted_p[1:], weighted_r[:1], weighted_r[1:], DPOConfig())
    assert bmc_out.loss.item() == pytest.approx(plain.loss.item(), abs=1e-7)


class WordTokenizer:
    """Token id = index in a word list; decode gives the word with a leading space."""

    def __init__(self, text: str) -> None:
        self.words = sorted(set(text.split()))

    def encode(self, text: str) -> list[int]:
        return [self.words.index(w) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " " + " ".join(self.words[i] for i in ids)


def test_bmc_diff_mask_marks_changed_content_tokens_only() -> None:
    winning = "so the total is 42 apples and the answer is 42"
    losing = "so the total is 41 apples or the answer is 41"
    tok = WordTokenizer(winning + " " + losing)
    mask_w, mask_l = bmc.diff_masks(tok, tok.encode(winning), tok.encode(losing))
    assert [w for w, m in zip(winning.split(), mask_w, strict=True) if m] == ["42", "42"]
    # "or" vs "and" differ but are stopwords
    assert [w for w, m in zip(losing.split(), mask_l, strict=True) if m] == ["41", "41"]
    _, with_stopwords = bmc.diff_masks(tok, tok.encode(winning), tok.encode(losing), False)
    assert sum(with_stopwords) == 3


def test_bmc_bridging_prompt_and_call() -> None:
    backend = ScriptedBackend(rules=[(r"Draft answer \(worse\)\n(.*?)\n", r"fixed: \1")])
    rows = [{"prompt": "Add 2 and 2.", "chosen": "4", "rejected": "5"}]
    assert bmc.bridge(backend, rows, bmc.BMCConfig()) == ["fixed: 5"]
    content = bmc.bridging_prompt("P", "W", "L")[1]["content"]
    assert (
        "### Reference answer (better)\nW" in content and "### Draft answer (worse)\nL" in content
    )


# -- Flat-LoRA -----------------------------------------------------------------------------


def lora_model(n_in: int = 2048, n_out: int = 24, seed: int = 0) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = torch.nn.Sequential()
    base.add_module("proj", torch.nn.Linear(n_in, n_out, bias=False))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["proj"]))
    with torch.no_grad():  # B is zero at init; make W' differ from W
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return model


def test_flat_lora_cosine_ramp() -> None:
    assert [round(ramp(t), 3) for t in (0, 0.25, 0.5, 1.0)] == [0.0, 0.146, 0.5, 1.0]
    assert ramp(0.3, "constant") == 1.0


def test_flat_lora_noise_has_the_papers_per_row_std_and_regenerates() -> None:
    model = lora_model()
    flat = FlatLoRA(model, FlatLoRAConfig(sigma=0.5, seed=3))
    flat.begin_step(step=5, total_steps=10)  # ramp(1/2) = 0.5
    layer = flat.layers[0][1]
    weight = merged_weight(layer).detach()
    expected = 0.5 * 0.5 * torch.linalg.vector_norm(weight, dim=1) / math.sqrt(weight.shape[1])
    eps = flat.layer_noise(0)
    assert eps.shape == weight.shape
    assert torch.allclose(eps.std(dim=1), expected, rtol=0.06)
    assert torch.equal(eps, flat.layer_noise(0))  # regenerated from the seed, bit for bit
    flat.begin_step(step=6, total_steps=10)
    assert not torch.equal(flat.layer_noise(0)[0], eps[0])
    assert flat.extra_state_bytes() == 24 * 4  # one fp32 scale per row, no copy of W


def test_flat_lora_forward_and_gradients_are_those_at_w_plus_eps() -> None:
    model = lora_model(n_in=64, n_out=8)
    flat = FlatLoRA(model, FlatLoRAConfig(sigma=0.3, seed=1, schedule="constant"))
    flat.begin_step(0, 4)
    x = torch.randn(5, 64)
    out = model(x)
    layer = flat.layers[0][1]
    eps = flat.layer_noise(0)
    explicit = x @ (merged_weight(layer) + eps).T
    assert torch.allclose(out, explicit, atol=1e-5)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    explicit = x @ (merged_weight(layer) + eps).T
    explicit.square().sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, grads[name], atol=1e-5), name
    with model.disable_adapter():  # the DPO reference: no adapter, no noise
        assert torch.allclose(model(x), x @ layer.base_layer.weight.T, atol=1e-6)


def test_flat_lora_step_with_zero_lr_changes_no_weight() -> None:
    model = lora_model(n_in=64, n_out=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flat = FlatLoRA(model, FlatLoRAConfig(sigma=0.5))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    flat.begin_step(3, 4)
    model(torch.randn(3, 64)).sum().backward()
    optimizer.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


# -- RISE ----------------------------------------------------------------------------------


def test_rise_routes_error_types_by_step_content() -> None:
    every = tuple(rise.ERROR_TYPES)
    assert rise.error_types_for("48 / 2 = 24 clips", every) == [
        "numerical_value",
        "operator",
        "swapped_terms",
    ]
    assert "deleted_term" in rise.error_types_for("12 + 5 + 3 = 20", every)
    assert rise.error_types_for("She has 12 apples.", every) == ["numerical_value", "substitution"]
    assert rise.error_types_for("Add the two amounts.", every) == ["wording", "substitution"]
    assert rise.error_types_for("Add the two amounts.", ("operator",)) == []


def test_rise_filters() -> None:
    config = rise.RISEConfig(max_edit_distance=3)
    assert rise.filter_edit("48 / 2 = 24", "48 / 3 = 16", config) == "48 / 3 = 16"
    assert rise.filter_edit("48 / 2 = 24", "48 / 2 = 24", config) is None  # no change
    assert rise.filter_edit("48 / 2 = 24", "48 / 3 = 16 (this is a mistake)", config) is None
    assert rise.filter_edit("48 / 2 = 24", "1 2 3 4 5 6", config) is None  # too far
    assert rise.filter_edit("so 48 / 2 = 24", "so 48 / 2 = \\boxed{25}", config) == "so 48 / 2 = 25"
    assert rise.word_edit_distance("a b c", "a x c d") == 2


def test_rise_builds_full_and_step_pairs_sharing_the_correct_prefix() -> None:
    correct = "Half of 48 is 48 / 2 = 24.\nTogether 48 + 24 = 72.\n\\boxed{72}"
    wrong = "Half of 48 is 48 / 2 = 20.\nTogether 48 + 20 = 68.\n\\boxed{68}"
    answers = iter([correct, wrong])
    backend = ScriptedBackend(
        rules=[
            (r"Rewrite the next step", "Together 48 - 24 = 24."),
            (r"Natalia", "<sample>"),
        ],
        responder=None,
    )
    samples = ScriptedBackend(responder=lambda prompt: next(answers))

    class Router:
        name = "router"

        def generate(self, prompts, params):  # sampling vs editing calls
            if params.temperature > 0:
                return samples.generate(prompts, params)
            return backend.generate(prompts, params)

    problems = [{"question": "Natalia sold 48 clips ...", "answer": "#### 72"}]
    config = rise.RISEConfig(samples_per_problem=2, error_types=("operator",), seed=0)
    rows, stats = rise.build_pairs(Router(), problems, config)
    full = [r for r in rows if r["kind"] == "full"]
    step = [r for r in rows if r["kind"] == "step"]
    assert [(r["chosen"], r["rejected"]) for r in full] == [(correct, wrong)]
    assert len(step) == 1
    # only the two equation steps could get an operator error; the seeded choice is fixed
    assert step[0]["error_type"] == "operator"
    assert step[0]["rejected"] == "Together 48 - 24 = 24."
    prefix = step[0]["prompt"][-1]
    assert prefix["role"] == "assistant"
    assert step[0]["chosen"] in correct.splitlines()
    assert prefix["content"] == "".join(
        line + "\n"
        for line in correct.splitlines()[: correct.splitlines().index(step[0]["chosen"])]
    )
    assert (stats.samples, stats.correct_samples, stats.full_pairs, stats.step_pairs) == (
        2,
        1,
        1,
        1,
    )


def test_rise_plan_edits_is_seeded() -> None:
    solution = "a = 1 + 2\nb = 3 * 4\nc = 5 - 1"
    config = rise.RISEConfig(edits_per_solution=2)
    first = rise.plan_edits("q", 0, solution, config, random.Random(7))
    again = rise.plan_edits("q", 0, solution, config, random.Random(7))
    assert [(e.step_index, e.error_type) for e in first] == [
        (e.step_index, e.error_type) for e in again
    ]
    assert len({e.step_index for e in first}) == 2


# -- TATA ----------------------------------------------------------------------------------


def test_tata_selection_by_quantiles() -> None:
    cot = [1.0, 0.5, 0.5, 0.0, 0.25]
    tir = [0.0, 0.5, 0.25, 1.0, 0.25]
    # delta = [1, 0, .25, -1, 0]; Q(1/3) = 0, Q(2/3) = 0.25 (linear interpolation)
    choices = tata.select(cot, tir, tata.TATAConfig(low_quantile=1 / 3, high_quantile=2 / 3))
    assert choices == [(True, False), (False, True), (True, False), (False, True), (False, True)]
    both = tata.select(cot, tir, tata.TATAConfig(low_quantile=0.0, high_quantile=1.0))
    assert both == [(True, False), (True, True), (True, True), (False, True), (True, True)]
    rows = tata.sft_rows([{"question": "q", "cot": "C", "tir": "T"}], [(True, True)])
    assert [(r["kind"], r["completion"]) for r in rows] == [("cot", "C"), ("tir", "T")]


def test_tata_anchors_are_the_queries_nearest_the_centroids() -> None:
    queries = [
        "apples and oranges in a basket",
        "apples and pears in a basket",
        "a train travels at 60 miles per hour",
        "a car travels at 40 miles per hour",
    ]
    anchors = tata.select_anchors(queries, tata.TATAConfig(anchors=2, seed=0))
    assert len(anchors) == 2
    assert {a // 2 for a in anchors} == {0, 1}  # one anchor from each topic


def test_tata_one_shot_scores_use_the_demonstration() -> None:
    problems = [
        {"question": f"q{i}", "answer": str(i), "cot": f"cot{i}", "tir": f"tir{i}"}
        for i in range(3)
    ]

    def solver(prefix: str):
        # a demo from problem 0 makes the model answer right; others make it answer 0
        def solve(prompts):
            out = []
            for p in prompts:
                demo, target = p[1]["content"], p[2]["content"].split("\n")[0]
                right = demo == f"{prefix}0"
                out.append(f"\\boxed{{{target[1:] if right else 99}}}")
            return out

        return solve

    cot, tir = tata.aptitude_scores(problems, [0, 1, 2], solver("cot"), solver("nothing"))
    assert cot == [1.0, 0.0, 0.0]  # problem 0 demonstrates on anchors 1 and 2 only
    assert tir == [0.0, 0.0, 0.0]


def test_train_config_errors_name_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        TrainConfig.from_hyperparameters("dpo", {"beta": -1})
    assert err.value.field == "hyperparameters.beta"
    with pytest.raises(InvalidInput) as err:
        TrainConfig.from_hyperparameters("dpo", {"batch_size": 2.5})
    assert err.value.field == "hyperparameters.batch_size"
    with pytest.raises(InvalidInput) as err:
        TrainConfig.from_hyperparameters("dpo", {"learnin_rate": 1e-4})
    assert err.value.field == "hyperparameters.learnin_rate"
    with pytest.raises(InvalidInput) as err:
        TrainConfig.from_hyperparameters("ppo", {})
    assert err.value.field == "objective"
    config = TrainConfig.from_hyperparameters("sft", {"batch_size": 2.0, "flat_lora_sigma": 0.05})
    assert config.batch_size == 2 and config.flat_lora is not None
