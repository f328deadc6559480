"""Searching: a StudySpec's space -> sampled TrialConfigs, samplers and pruners by name, the study.

space (suggest a TrialConfig, filters_k naming, grid counting), samplers (the registry of
samplers and pruners), study (open or resume an Optuna study, run trials until N finish),
objective (the only place where Optuna meets training).
"""
