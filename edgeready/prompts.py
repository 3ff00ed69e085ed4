"""How a question becomes a request, for both prompt styles.

Base models get a few-shot completion prompt: an instruction line, worked examples in a
"Question: ... / Answer: ..." format, then the question and "Answer:". Generation stops at the
newline that ends an answer. Instruct models get the same examples as earlier chat turns, rendered
by the model's own chat template (stored in its GGUF), so both styles see identical evidence.

The examples deliberately avoid the relations of the embedded set (capitals, currencies, languages,
continents of countries) so that no example leaks an answer to an evaluated question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from edgeready.records import GenerationRequest, QAItem

PromptStyle = Literal["few-shot", "chat"]


def form_for(request: GenerationRequest, style: PromptStyle) -> GenerationRequest:
    """The request as a model of `style` takes it: chat turns for instruct models (the prompt as one
    user turn when there are none), the plain text for few-shot models."""
    if style == "chat":
        return request if request.messages else replace(request, messages=(("user", request.prompt),))
    return replace(request, messages=()) if request.messages else request

INSTRUCTION = "Answer each question with a short factual answer, a name or a few words only."

FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare"),
    ("What is the largest planet in the Solar System?", "Jupiter"),
    ("Which river flows through the city where the Colosseum stands?", "Tiber"),
    ("What is the chemical symbol of gold?", "Au"),
)


def qa_request(item: QAItem, max_tokens: int) -> GenerationRequest:
    """Both forms in one request: the few-shot text in `prompt`, the same examples as chat turns in
    `messages`. Each adapter sends the form its model takes (its candidate's prompt_style), so an
    offload router can hand one request to a base model on the device and an instruct model on a
    server."""
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in FEW_SHOT)
    preamble = f"{INSTRUCTION}\n\n{shots}"
    prompt = f"{preamble}Question: {item.question}\nAnswer:"
    messages: list[tuple[str, str]] = [("system", INSTRUCTION)]
    for q, a in FEW_SHOT:
        messages += [("user", q), ("assistant", a)]
    messages.append(("user", item.question))
    return GenerationRequest(
        prompt=prompt, messages=tuple(messages), max_tokens=max_tokens, stop=("\n",), tag=item.complexity,
        # "Question:" is shared too: it ends the prefix every question repeats.
        shared_prefix=f"{preamble}Question:",
    )


def common_preamble(prompts: Sequence[str]) -> str:
    """The start all `prompts` share, up to and including its last newline (a description and few-shot examples):
    the `shared_prefix` hint for prompts built elsewhere (lm-eval tasks). Cut at a line end, so any two or more
    prompts of a task whose questions are one line long give the same preamble, whichever are asked together."""
    if len(prompts) < 2:
        return ""
    # The common start of all strings is that of the first and the last in sorted order.
    first, last = min(prompts), max(prompts)
    same = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))
    return first[: first.rfind("\n", 0, same) + 1]
