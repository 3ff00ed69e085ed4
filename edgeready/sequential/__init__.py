"""Always-valid sequential tests: a gate looks at its evidence after every round of items and stops as soon
as the verdict is settled at the target's error rates (docs/SEQUENTIAL.md).

- `sprt.BernoulliSPRT`: the accuracy gate's default, Wald's SPRT with an indifference zone (binary scores);
  `sprt.operating_characteristics` and `sprt.fixed_n_design` give its exact error rates and items used,
  and the fixed-n test it is compared with.
- `mixture.SequentialProportionTest`: the beta-binomial mixture confidence sequence (binary scores; no
  indifference zone needed, at the price of more items near the threshold).
- `betting.BettingMeanTest`: the hallucination gate's, a betting e-process for a mean in [0, 1].
- `base`: the decision and the loop over rounds that they share.

Import from the submodules: this package imports nothing itself, so validating a target (which checks that a
sequential gate can pass at all, and with the power it promises) costs NumPy, not SciPy, for the SPRT and the
betting test (`test: mixture` needs scipy.special).
"""
