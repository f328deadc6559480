"""Searching: a StudySpec's space -> sampled TrialConfigs, samplers and pruners by name, the study.

space (suggest a TrialConfig), samplers (the registry of samplers and pruners), schedule
(TrialSchedule: what every trial of a run trains, and its pruner), preflight (the study file's
checks that need Optuna or torch, run after parsing: `load_spec`), study (open or resume an
Optuna study, run trials until N finish), objective (the only place where Optuna meets
training).
"""
