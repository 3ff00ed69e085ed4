"""Gate logic, independent of pytest: measure (adapter -> responses -> scores -> measurement) and
judge (measurement -> checks against the target -> GateResult with step-1 advice)."""
