"""How a question becomes a request, for both prompt styles.

Base models get a few-shot completion prompt: an instruction line, worked examples in a
"Question: ... / Answer: ..." format, then the question and "Answer:". Generation stops at the
newline that ends an answer. Instruct models get the same examples as earlier chat turns, rendered
by the model's own chat template (stored in its GGUF), so both styles see identical evidence.

The examples deliberately avoid the relations of the embedded set (capitals, currencies, languages,
continents of countries) so that no example leaks an answer to an evaluated question.
"""

from __future__ import annotations

from typing import Literal

from edgeready.records import GenerationRequest, QAItem

PromptStyle = Literal["few-shot", "chat"]

INSTRUCTION = "Answer each question with a short factual answer, a name or a few words only."

FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare"),
    ("What is the largest planet in the Solar System?", "Jupiter"),
    ("Which river flows through the city where the Colosseum stands?", "Tiber"),
    ("What is the chemical symbol of gold?", "Au"),
)


def qa_request(item: QAItem, style: PromptStyle, max_tokens: int) -> GenerationRequest:
    if style == "few-shot":
        shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in FEW_SHOT)
        prompt = f"{INSTRUCTION}\n\n{shots}Question: {item.question}\nAnswer:"
        return GenerationRequest(prompt=prompt, max_tokens=max_tokens, stop=("\n",), tag=item.complexity)
    messages: list[tuple[str, str]] = [("system", INSTRUCTION)]
    for q, a in FEW_SHOT:
        messages += [("user", q), ("assistant", a)]
    messages.append(("user", item.question))
    return GenerationRequest(
        prompt=item.question, messages=tuple(messages), max_tokens=max_tokens, stop=("\n",), tag=item.complexity
    )
