"""lm-evaluation-harness as a part of the suite, both ways round.

- edgeready.datasets.harness (not here: gates import it): an lm-eval task as the accuracy gate's items
  (`dataset: {kind: lm-eval, task: ...}`).
- `model`: edgeready's adapters as an lm-eval model (`--model edgeready`), registered on import.
- `tasks/`: the shipped tasks (edgeready_countries_qa, edgeready_countries_mc, edgeready_webqsp).
- `python -m edgeready.lm_eval ...`: lm-eval's command line with the model registered and the shipped tasks
  on its include path.
"""
