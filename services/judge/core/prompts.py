"""Judge prompts: the pairwise and pointwise chain-of-thought templates every strategy builds
on (the MT-Bench judge templates of Zheng et al. 2023, reasoning first, verdict last), with
the optional blocks the strategies add: a reference answer (RevisEval), crowd judgments
(CCE) and an expanded criteria list (criteria expansion).

A pairwise prompt with no block is exactly the vanilla prompt, so a strategy that adds
nothing (CCE with k = 0) asks the judge the same question as vanilla.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.llm.base import Message

PAIRWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by "
    "two AI assistants to the user question displayed below. You should choose the assistant "
    "that follows the user's instructions and answers the user's question better. Your "
    "evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, "
    "creativity, and level of detail of their responses. Begin your evaluation by comparing "
    "the two responses and provide a short explanation. Avoid any position biases and ensure "
    "that the order in which the responses were presented does not influence your decision. "
    "Do not allow the length of the responses to influence your evaluation. Do not favor "
    "certain names of the assistants. Be as objective as possible. After providing your "
    "explanation, output your final verdict by strictly following this format: {verdict}"
)
POINTWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider "
    "factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of "
    "detail of the response. Begin your evaluation by providing a short explanation. Be as "
    "objective as possible. After providing your explanation, you must rate the response on a "
    'scale of 1 to 10 by strictly following this format: "[[rating]]", for example: '
    '"Rating: [[5]]".'
)
REFERENCE_NOTE = (
    " A reference answer is given. Use it as a guide to what a good response contains; it "
    "is not necessarily perfect, and a response may be good without matching it."
)
CROWD_NOTE = (
    " You are also given judgments that compare each of the two assistants with further "
    "assistants. Use them as internal reference: they point out details, strengths and "
    "weaknesses of Assistant A and Assistant B that you should verify and weigh yourself."
)
CRITERIA_NOTE = " Evaluate the responses on each of the listed criteria before deciding."

# How each pairwise verdict format is asked for (services.judge.core.verdicts parses it).
VERDICT_INSTRUCTIONS = {
    "mtbench": '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and '
    '"[[C]]" for a tie.',
    "arena_hard": 'one of "[[A>>B]]" (A is significantly better), "[[A>B]]", "[[A=B]]" '
    '(a tie), "[[B>A]]" or "[[B>>A]]" (B is significantly better).',
    "llmbar": '"Output (a)" if assistant A is better or "Output (b)" if assistant B is '
    "better, as the last words of your answer.",
    "json": 'a JSON object {"winner": "A"}, {"winner": "B"} or {"winner": "tie"} on the last line.',
}
PAIRWISE_FORMATS = tuple(VERDICT_INSTRUCTIONS)


def pairwise_prompt(
    instruction: str,
    first: str,
    second: str,
    verdict_format: str = "mtbench",
    reference: str | None = None,
    crowd_judgments: Sequence[str] = (),
    criteria: Sequence[str] = (),
) -> list[Message]:
    """The judge sees `first` as Assistant A and `second` as Assistant B."""
    system = PAIRWISE_SYSTEM.format(verdict=VERDICT_INSTRUCTIONS[verdict_format])
    if criteria:
        system += CRITERIA_NOTE
    if reference is not None:
        system += REFERENCE_NOTE
    if crowd_judgments:
        system += CROWD_NOTE
    parts = [f"[User Question]\n{instruction}\n"]
    if reference is not None:
        parts.append(
            f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n"
        )
    parts.append(
        f"[The Start of Assistant A's Answer]\n{first}\n[The End of Assistant A's Answer]\n"
    )
    parts.append(
        f"[The Start of Assistant B's Answer]\n{second}\n[The End of Assistant B's Answer]"
    )
    if criteria:
        parts.append("\n[Criteria]\n" + "\n".join(f"- {c}" for c in criteria))
    if crowd_judgments:
        blocks = "\n\n".join(
            f"[Crowd Judgment {i + 1}]\n{text}" for i, text in enumerate(crowd_judgments)
        )
        parts.append(f"\n[The Start of Crowd Judgments]\n{blocks}\n[The End of Crowd Judgments]")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]


def pointwise_prompt(
    instruction: str, response: str, reference: str | None = None
) -> list[Message]:
    system = POINTWISE_SYSTEM + (REFERENCE_NOTE if reference is not None else "")
    parts = [f"[Question]\n{instruction}\n"]
    if reference is not None:
        parts.append(
            f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n"
        )
    parts.append(f"[The Start of Assistant's Answer]\n{response}\n[The End of Assistant's Answer]")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]
