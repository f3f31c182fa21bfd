"""Planted bugs: proof that the tests bite. ``make mutants`` (or ``python tests/mutations.py [name ...]``).

Each mutant is one small wrong edit a real bug could make (a flipped ranking, an off-by-one in the level ladder, a
missing ½, a wrong init, a density-changing shuffle, swapped scopes, a field missing from a hash). For each, the
repository is copied to a temporary folder, the edit is applied there (its ``old`` text must occur exactly once in
the file, else the mutant is stale and reported), and the named tests are run inside the copy with this Python. A
mutant is *caught* when pytest reports failing tests, *survived* when they pass. Before any mutant, the same tests
must pass on the unmutated copy, or nothing would be proven. Exit code 0 only if every mutant is caught.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "results",
    "outputs",
    "multirun",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "wandb",
)
ANSWERS = "tests/test_method_answers.py"
PAI = "tests/test_scores_pai.py"
GMP = "tests/test_gmp.py"
SPEED_REPORT = "tests/test_speed_report.py"
EXPORT = "tests/test_export.py"
OUTPUTS = "tests/test_outputs.py"
BN = "tests/test_batchnorm.py"
BUDGET = "tests/test_budget.py"
CALIBRATE = "tests/test_calibrate.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files or node ids


MUTANTS = [
    Mutant(
        "magnitude score sign flipped",
        "methods/pipeline/scores/weights.py",
        "return {n: params[n].detach().abs().cpu() for n in names}",
        "return {n: -params[n].detach().abs().cpu() for n in names}",
        (ANSWERS,),
    ),
    Mutant(
        "lottery ranks the smallest weights first",
        "methods/lottery.py",
        "scores = magnitude_scores(model, alive)",
        "scores = {n: -s for n, s in magnitude_scores(model, alive).items()}",
        (ANSWERS,),
    ),
    Mutant(
        "SNIP keeps the least sensitive connections",
        "methods/snip.py",
        "return snip_scores(model.to(stages.device), params, batches)",
        "return {n: -s for n, s in snip_scores(model.to(stages.device), params, batches).items()}",
        (ANSWERS,),
    ),
    Mutant(
        "SNIP scores ∂L/∂w instead of ∂L/∂c = g ⊙ w",
        "methods/pipeline/scores/sensitivity.py",
        "scores = {n: (grads[n] / count * values[n].to(torch.float64)).abs() for n in names}",
        "scores = {n: (grads[n] / count).abs() for n in names}",
        (ANSWERS,),
    ),
    Mutant(
        "OBD saliency without the ½",
        "methods/pipeline/scores/hessian.py",
        "out[name] = 0.5 * h * w.square()",
        "out[name] = h * w.square()",
        (ANSWERS,),
    ),
    Mutant(
        "OBD ranks by magnitude instead of saliency",
        "methods/obd.py",
        "return obd_saliency({n: p.detach().cpu() for n, p in params.items()}, hdiag)",
        "return {n: p.detach().abs().cpu() for n, p in params.items()}",
        (ANSWERS,),
    ),
    Mutant(
        "lottery level ladder off by one",
        "methods/lottery.py",
        "(1 - rates[n]) ** (level if level < count else hi)",
        "(1 - rates[n]) ** (level + 1 if level < count else hi)",
        (ANSWERS,),
    ),
    Mutant(
        "lottery prunes the output layer at the common rate",
        "methods/lottery.py",
        'n.startswith(head + ".")',
        'n.startswith(head + "#")',
        (ANSWERS,),
    ),
    Mutant(
        "fresh init (SNIP's official code, Frankle et al.'s reinit) is the scored init",
        "methods/pipeline/unstructured.py",
        'fresh = stages.init_stage("fresh_init", seed=stages.seed("init") + REINIT_OFFSET)',
        'fresh = stages.init_stage("fresh_init", seed=stages.seed("init"))',
        (ANSWERS,),
    ),
    Mutant(
        "survey SNIP arm at the Kaiming init",
        "conf/experiment/arm/snip.yaml",
        "  init: variance_scaling",
        "  init: kaiming_normal",
        (ANSWERS,),
    ),
    Mutant(
        "lottery reinit control reuses the original init",
        "methods/lottery.py",
        'fresh = stages.init_stage("reinit", seed=stages.seed("init") + REINIT_OFFSET)',
        'fresh = stages.init_stage("reinit", seed=stages.seed("init"))',
        (ANSWERS,),
    ),
    Mutant(
        "lottery reinit control trains from iteration 0",
        "methods/lottery.py",
        'state = stages.train_stage("control", fresh, stages.train_config, masks=pruned, start_iteration=k)',
        'state = stages.train_stage("control", fresh, stages.train_config, masks=pruned)',
        (ANSWERS,),
    ),
    Mutant(
        "Scratch re-initializes with the source's own init seed",
        "methods/scratch.py",
        'else stages.seed("init") + REINIT_OFFSET',
        'else stages.seed("init")',
        ("tests/test_scratch.py",),
    ),
    Mutant(
        "latency reports a block's time, not a forward's",
        "runners/metrics.py",
        "    return (time.perf_counter() - start) / number",
        "    return time.perf_counter() - start",
        ("tests/test_metrics.py",),
    ),
    Mutant(
        "latency times one model after the other, not in turns",
        "runners/metrics.py",
        "    while any(sum(b) * n < min_run_time or len(b) < min_blocks for b, n in zip(blocks, numbers)):\n"
        "        for forward, number, times in zip(forwards, numbers, blocks):\n",
        "    for forward, number, times in zip(forwards, numbers, blocks):\n"
        "        while sum(times) * number < min_run_time or len(times) < min_blocks:\n",
        ("tests/test_metrics.py",),
    ),
    Mutant(
        "a scratch init is not hashed by the widths it draws",
        "runners/experiment.py",
        'spec["widths"] = widths.widths()',
        "pass",
        ("tests/test_scratch.py",),
    ),
    Mutant(
        "a scratch init keeps the source's own channels",
        "runners/experiment.py",
        "widths = architecture.architecture() if",
        "widths = architecture if",
        ("tests/test_scratch.py",),
    ),
    Mutant(
        "shuffle draws positions with replacement (densities drift)",
        "methods/pipeline/scores/weights.py",
        "m.flatten()[torch.randperm(m.numel(), generator=gen)]",
        "m.flatten()[torch.randint(m.numel(), (m.numel(),), generator=gen)]",
        (ANSWERS,),
    ),
    Mutant(
        "layerwise selection acts globally",
        "methods/pipeline/select.py",
        'if scope == "global":',
        'if scope in ("global", "layerwise"):',
        (ANSWERS, "tests/test_masks.py"),
    ),
    Mutant(
        "random variants global and layerwise swapped",
        "methods/random.py",
        'return "global" if self.cfg.variant == "global" else "layerwise"',
        'return "layerwise" if self.cfg.variant == "global" else "global"',
        (ANSWERS,),
    ),
    Mutant(
        "pruned weights are ranked again (not only survivors)",
        "methods/pipeline/select.py",
        'flat = torch.where(alive.flatten(), scores.flatten().double(), torch.tensor(float("-inf"), '
        "dtype=torch.float64))",
        "flat = scores.flatten().double()",
        (ANSWERS, "tests/test_masks.py"),
    ),
    Mutant(
        "prune_from ignored: always the validation-selected weights",
        "methods/pipeline/unstructured.py",
        'return self.cfg.prune_from if source.kind == "train" else "selected"',
        'return "selected"',
        (ANSWERS,),
    ),
    Mutant(
        "lottery prune stages do not hash method.prunable",
        "methods/lottery.py",
        '                **({"prunable": prunable} if (prunable := nondefault(self.cfg.prunable)) else {}),\n',
        "",
        ("tests/test_hashes.py::test_flipping_a_field_changes_a_stage_hash_unless_declared_neutral[lottery]",),
    ),
    Mutant(
        "global selection keeps one weight too many",
        "methods/pipeline/select.py",
        "keep = round(global_target * total)",
        "keep = round(global_target * total) + 1",
        (ANSWERS,),
    ),
    Mutant(
        "shuffle returns the source mask unshuffled",
        "methods/pipeline/scores/weights.py",
        "return {n: m.flatten()[torch.randperm(m.numel(), generator=gen)].view_as(m) for n, m in masks.items()}",
        "return {n: m.clone() for n, m in masks.items()}",
        (ANSWERS,),
    ),
    Mutant(
        "SynFlow without the absolute value",
        "methods/pipeline/scores/synflow.py",
        "                tensor.abs_()",
        "                tensor.mul_(1)",
        (PAI,),
    ),
    Mutant(
        "SynFlow prunes to the target at its first iteration",
        "methods/synflow.py",
        "overall**exponent if k < n else overall,",
        "overall,",
        (f"{ANSWERS}::test_synflow_keeps_the_top_path_products_over_its_exponential_schedule",),
    ),
    Mutant(
        "SynFlow keeps ReLU6 clamps (the flow vanishes)",
        "methods/pipeline/scores/synflow.py",
        "            setattr(model.get_submodule(parent) if parent else model, child, nn.ReLU())",
        "            pass",
        (PAI,),
    ),
    Mutant(
        "GraSP with the sign flipped",
        "methods/grasp.py",
        "kept = {n: (params[n].detach() * hg[n]).cpu() for n in alive}",
        "kept = {n: (-params[n].detach() * hg[n]).cpu() for n in alive}",
        (f"{ANSWERS}::test_grasp_removes_the_largest_minus_theta_hg",),
    ),
    Mutant(
        "GraSP scores the real model, not a copy",
        "methods/grasp.py",
        "scored = copy.deepcopy(model).to(stages.device)",
        "scored = model.to(stages.device)",
        (f"{ANSWERS}::test_grasp_scores_a_train_mode_copy_and_leaves_the_real_bn_statistics_alone",),
    ),
    Mutant(
        "GMP's exponent 2 instead of 3",
        "methods/pipeline/schedules.py",
        "CUBIC = 3",
        "CUBIC = 2",
        (PAI,),
    ),
    Mutant(
        "shuffle across layers instead of within",
        "methods/pipeline/scores/weights.py",
        "    return {n: m.flatten()[torch.randperm(m.numel(), generator=gen)].view_as(m) for n, m in masks.items()}",
        "    joined = torch.cat([m.flatten() for m in masks.values()])\n"
        "    joined = joined[torch.randperm(joined.numel(), generator=gen)]\n"
        "    sizes = [m.numel() for m in masks.values()]\n"
        "    return {n: p.view_as(m) for (n, m), p in zip(masks.items(), joined.split(sizes))}",
        (ANSWERS,),
    ),
    Mutant(
        "invert ignored",
        "methods/pipeline/unstructured.py",
        "return {n: -s.double() for n, s in scores.items()} if self.cfg.invert else scores",
        "return scores",
        (f"{ANSWERS}::test_invert_keeps_the_complement_of_the_ranking",),
    ),
    Mutant(
        "the shuffle stage does not hash the mask it permutes",
        "methods/pipeline/unstructured.py",
        '{"shuffle_seed": seed, "mask": pruned.ref, **self.recalibration_spec()}',
        '{"shuffle_seed": seed, **self.recalibration_spec()}',
        (f"{ANSWERS}::test_the_shuffle_stage_follows_its_mask",),
    ),
    Mutant(
        "layer collapse counts biases as layers",
        "methods/pipeline/collapse.py",
        "return [n for n, m in masks.items() if m.dim() > 1]",
        "return [n for n, m in masks.items() if m.dim() > 0]",
        (PAI,),
    ),
    Mutant(
        "slimming's L1 subgradient pushes γ away from 0",
        "methods/slimming.py",
        "torch.sign(module.weight), alpha=lam",
        "torch.sign(module.weight), alpha=-lam",
        ("tests/test_slimming.py",),
    ),
    Mutant(
        "masked training forgets to mask the gradients",
        "methods/pipeline/masks.py",
        "        if present:\n            torch._foreach_mul_",
        "        if False:\n            torch._foreach_mul_",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "masked training leaves the pre-hooks detached",
        "methods/pipeline/masks.py",
        "            module._forward_pre_hooks.update(hooks)",
        "            pass",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "a mask update inside a stage forgets the optimizer state (momentum, Adam moments)",
        "methods/pipeline/masks.py",
        "        self._zero(indices, keep, optimizer)",
        "        self._zero(indices, keep, None)",
        (
            "tests/test_masks.py",
            f"{GMP}::test_every_forward_uses_the_masks_of_eq_1_chosen_by_magnitude_and_ends_exactly_on_the_target",
        ),
    ),
    Mutant(
        "GMP updates the masks one step late",
        "methods/pipeline/masks.py",
        "            if iteration not in steps:",
        "            if iteration - 1 not in steps:",
        (GMP,),
    ),
    Mutant(
        "GMP's schedule counts its own calls (a resumed stage restarts it from step 0)",
        "methods/pipeline/masks.py",
        "        def at_iteration(_model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int) -> None:\n",
        "        calls = iter(range(1 << 62))\n\n"
        "        def at_iteration(_model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int) -> None:\n"
        "            iteration = next(calls)\n",
        (GMP,),
    ),
    Mutant(
        "GMP reports a checkpoint evaluated before its last mask update",
        "runners/experiment.py",
        "select_from=mask_schedule.last if mask_schedule is not None else 0,",
        "select_from=0,",
        (GMP,),
    ),
    Mutant(
        "GMP's stage does not hash its scope",
        "methods/gmp.py",
        '"scope": scope, "prunable"',
        '"prunable"',
        ("tests/test_hashes.py::test_flipping_a_field_changes_a_stage_hash_unless_declared_neutral[gmp]",),
    ),
    Mutant(
        "masked training trusts an optimizer's state from before the masks",
        "methods/pipeline/masks.py",
        "        if optimizer is not self._optimizer:\n            self._agree(optimizer)",
        "        if False:\n            self._agree(optimizer)",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "masked training masks gradients with the buffers it found at entry (stale after NHWC, a checkpoint)",
        "methods/pipeline/masks.py",
        "        return cast(list[torch.Tensor], [buffers[key] for buffers, key in self._slots])",
        "        return self.__dict__.setdefault('_entry', [buffers[key] for buffers, key in self._slots])",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "a corrupt stage found by a reader stays in place",
        "foundations/store.py",
        "                return result\n            self._move_aside(kind, digest, problem)\n        return None",
        "                return result\n        return None",
        (
            "tests/test_store.py::test_a_corrupt_shared_stage_is_moved_aside_and_its_next_consumer_recomputes_it_bitwise",
        ),
    ),
    Mutant(
        "the store moves a stage aside without checking it again under the lock",
        "foundations/store.py",
        "        with self._lock(kind, digest):\n            result, problem = self._check(folder)\n            if problem is None:\n"
        "                return result\n            self._move_aside",
        "        with self._lock(kind, digest):\n            self._move_aside",
        ("tests/test_store.py::test_what_looked_corrupt_is_checked_again_under_the_lock_before_anything_moves",),
    ),
    Mutant(
        "a resumed stage does not say so",
        "foundations/training/loop.py",
        '        log.info(\n            "resumed %s',
        '        log.debug(\n            "resumed %s',
        ("tests/test_store.py::test_a_resumed_stage_says_so_in_the_log",),
    ),
    Mutant(
        "evaluation lines go to the console too",
        "conf/config.yaml",
        "        propagate: false",
        "        propagate: true",
        ("tests/test_job_log.py",),
    ),
    Mutant(
        "the train hash leaves out the conv layout train() picks",
        "runners/experiment.py",
        "        layout = channels_last(train_cfg.channels_last, self.trained_convs(start, weights), self.device)",
        "        layout = train_cfg.channels_last",
        ("tests/test_layout.py",),
    ),
    Mutant(
        "conv nets train NCHW whatever the layout says",
        "foundations/training/loop.py",
        "    layout = torch.channels_last if nhwc else",
        "    layout = torch.contiguous_format if nhwc else",
        ("tests/test_layout.py",),
    ),
    Mutant(
        "the layout rule lets narrow stride-2 1x1 convs through",
        "foundations/training/layout.py",
        "    strided = conv.stride != (1, 1)",
        "    strided = max(conv.stride) > 2",
        ("tests/test_layout.py::test_the_rule_refuses_every_geometry_the_probe_saw_fail",),
    ),
    Mutant(
        "the layout rule lets narrow stride-2 1x1 convs train channels-last (their gradients, in a child process)",
        "foundations/training/layout.py",
        "    strided = conv.stride != (1, 1)",
        "    strided = max(conv.stride) > 2",
        ("tests/test_layout.py::test_narrow_convs_the_rule_allows_give_the_contiguous_gradients_in_a_child_process",),
    ),
    Mutant(
        "the train stage resolves the layout on the base network, not the one it trains",
        "runners/experiment.py",
        "        layout = channels_last(train_cfg.channels_last, self.trained_convs(start, weights), self.device)",
        "        layout = channels_last(train_cfg.channels_last, self.base_convs, self.device)",
        ("tests/test_layout.py::test_the_train_stage_resolves_the_layout_on_the_network_it_trains",),
    ),
    Mutant(
        "a test that crashed its xdist worker is queued again",
        "tests/conftest.py",
        "            workload[scope][crashed] = True",
        "            pass",
        ("tests/test_crash_isolation.py",),
    ),
    Mutant(
        "the CPU thread count is left out of the hashes",
        "runners/identity.py",
        '    return {"threads": threads} if threads not in (None, 1) else {}',
        "    return {}",
        ("tests/test_hashes.py::test_the_cpu_thread_count_is_hashed_unless_it_is_the_default_one",),
    ),
    Mutant(
        "a default moved into a schema is hashed against its new value",
        "foundations/checks.py",
        '    if "hash_default" in f.metadata:',
        "    if False:",
        ("tests/test_jobs.py::test_moved_defaults_hash_as_before",),
    ),
    Mutant(
        "pruning at init declares its fine-tune read",
        "methods/pipeline/unstructured.py",
        '        if self.cfg.when != "init":\n            if not self.cfg.recovery.rewinds:',
        "        if True:\n            if not self.cfg.recovery.rewinds:",
        ("tests/test_jobs.py::test_a_value_the_method_ignores_is_refused_naming_who_uses_it",),
    ),
    Mutant(
        "the pre-launch check lets a value the method ignores through",
        "runners/jobs.py",
        '                raise CheckError(message, "value")',
        "                pass",
        ("tests/test_jobs.py::test_a_value_the_method_ignores_is_refused_naming_who_uses_it",),
    ),
    Mutant(
        "a job's config starts from the previous job's whatever it set",
        "runners/jobs.py",
        "        if reuse and keys is not None and last is not None and last[0] == keys:",
        "        if reuse and last is not None:",
        ("tests/test_jobs.py::test_each_job_is_what_hydra_compose_makes_of_it",),
    ),
    Mutant(
        "train.epochs under train.iterations goes through",
        "runners/jobs.py",
        '    if "train.epochs" in keys and config.train.iterations is not None:',
        '    if "train.epochs" in keys and config.train.iterations is None and False:',
        ("tests/test_jobs.py::test_train_epochs_where_iterations_decide_the_length_is_refused",),
    ),
    Mutant(
        "own data's default validation split compared as a number",
        "runners/config.py",
        "        dataset.val_size is None or dataset.val_size > 0",
        "        dataset.val_size > 0",
        ("tests/test_own_data.py::test_own_data_validates_with_the_default_validation_split",),
    ),
    Mutant(
        "the job folder's record does not name its store",
        "runners/train.py",
        "    return {**record, STORE_KEY: str(store.root.resolve())}",
        "    return {**record}",
        ("tests/test_export.py::test_the_record_a_run_prints_leads_to_its_store_wherever_paths_results_was",),
    ),
    Mutant(
        "the sparse kernels are built from the unmasked weights (weight_orig)",
        "methods/pipeline/masks.py",
        'return (getattr(module, f"{name}{_ORIG}") * mask).detach()',
        'return getattr(module, f"{name}{_ORIG}").detach()',
        ("tests/test_sparse_kernels.py::test_a_sparse_linear_equals_the_masked_dense_product",),
    ),
    Mutant(
        "N:M groups of a conv run along its kernel positions, not its input channels",
        "methods/pipeline/select.py",
        "return tensor.permute(0, 2, 3, 1).reshape(-1, tensor.shape[1])",
        "return tensor.reshape(-1, tensor.shape[1])",
        ("tests/test_sparse_kernels.py::test_nm_selection_keeps_the_n_best_of_every_m_along_the_input",),
    ),
    Mutant(
        "the N:M pattern is left out of the lottery's prune hash",
        "methods/lottery.py",
        '**({"pattern": self.cfg.pattern} if nm is not None else {}),',
        "**({}),",
        (
            "tests/test_sparse_kernels.py::test_an_nm_experiment_prunes_n_of_every_m_trained_weights_and_hashes_the_pattern",
        ),
    ),
    Mutant(
        "divergence goes unnoticed",
        "foundations/training/loop.py",
        "        if first >= 0:\n            raise Diverged",
        "        if first < -1:\n            raise Diverged",
        ("tests/test_fail_loudly.py::test_the_loop_stops_at_the_first_non_finite_loss",),
    ),
    Mutant(
        "the report groups without the setting (one row per label, settings averaged)",
        "analysis/settings.py",
        "    if len(set(keys.values())) == 1:",
        "    if True:",
        (
            "tests/test_report.py::test_two_configs_under_one_sweep_name_are_two_rows_naming_the_fields_they_differ_in",
            "tests/test_report.py::test_two_image_folders_never_share_a_cell",
        ),
    ),
    Mutant(
        "a seed repeated in one cell counts as another seed",
        "analysis/tables.py",
        'pd.DataFrame({"seed": cell["seed"].map(seed_key), "value"',
        'pd.DataFrame({"seed": cell.index.map(str), "value"',
        ("tests/test_report.py::test_one_training_under_two_labels_is_one_row_naming_both",),
    ),
    Mutant(
        "one training under two labels stays two rows",
        "analysis/settings.py",
        "            if len(rows) > 1:\n                members = ",
        "            if len(rows) > 2:\n                members = ",
        ("tests/test_report.py::test_one_training_under_two_labels_is_one_row_naming_both",),
    ),
    Mutant(
        "the best mean is bold whatever the seeds say",
        "analysis/tables.py",
        "        if all(clearly_better(column[top], column[other]) for other in column if other != top):",
        "        if True:",
        ("tests/test_report.py::test_bold_only_where_paired_seeds_tell_the_best_apart",),
    ),
    Mutant(
        "unpaired bold ignores the standard deviations",
        "analysis/tables.py",
        "        return sa.mean - sb.mean > max(sa.std, sb.std)",
        "        return sa.mean - sb.mean > 0",
        ("tests/test_report.py::test_bold_without_common_seeds_needs_a_gap_beyond_both_stds",),
    ),
    Mutant(
        "one seed is captioned as mean ± std over seeds",
        "analysis/tables.py",
        "    if top <= 1:",
        "    if top < 1:",
        ("tests/test_report.py::test_one_seed_says_so_and_bolds_nothing",),
    ),
    Mutant(
        "a method without a dense model renames the dense baseline",
        "analysis/settings.py",
        "for i in group.index if has_dense[i]}",
        "for i in group.index}",
        ("tests/test_report.py::test_every_table_keeps_a_dense_baseline_named_only_where_dense_settings_differ",),
    ),
    Mutant(
        "Holm adjusts over the parts of every claim judged so far, not within the claim",
        "analysis/claims.py",
        "    family: list[tuple[Part, float, float]] = []  # the tested secondary parts with (p_confirm, p_refute)\n",
        "    global _FAMILY\n    family = _FAMILY = globals().get('_FAMILY', [])\n",
        (
            "tests/test_claims.py::test_holm_is_within_each_claim_not_across_claims",
            "tests/test_claims.py::test_holm_within_a_claim_keeps_parts_that_alone_would_confirm_inconclusive",
        ),
    ),
    Mutant(
        "a failed precondition lets the primary's verdict through",
        "analysis/claims.py",
        "    if failed:\n        return PRECONDITION_FAILED, reasons",
        "    if False:\n        return PRECONDITION_FAILED, reasons",
        ("tests/test_claims.py::test_a_failed_precondition_gives_no_verdict_naming_it_and_never_votes",),
    ),
    Mutant(
        "an undecided precondition counts as met",
        "analysis/claims.py",
        "failed = [p for p in parts if p.role == PRECONDITION and p.verdict != CONFIRMED]",
        "failed = [p for p in parts if p.role == PRECONDITION and p.verdict == REFUTED]",
        ("tests/test_claims.py::test_an_undecided_precondition_is_not_met",),
    ),
    Mutant(
        "parts where both networks collapsed are judged",
        "analysis/claims.py",
        "    if all(m <= chance + CHANCE_MARGIN for m in means):",
        "    if all(m <= chance for m in means):",
        ("tests/test_claims.py::test_parts_where_both_networks_collapsed_are_not_judged_nor_counted_by_holm",),
    ),
    Mutant(
        "the claim's verdict is any part's, not the primary's",
        "analysis/claims.py",
        "    return next(p for p in parts if p.role == PRIMARY).verdict, reasons",
        "    return parts[0].verdict, reasons",
        ("tests/test_claims.py::test_the_primary_part_alone_decides_the_claim",),
    ),
    Mutant(
        "the stability halves overlap",
        "analysis/claims.py",
        "for s in (seeds[:half], seeds[half:])]",
        "for s in (seeds[:half], seeds[half - 1 :])]",
        ("tests/test_claims.py::test_the_stability_line_judges_each_half_of_the_seeds_alone",),
    ),
    Mutant(
        "the record's setting keeps the seed",
        "runners/identity.py",
        'NOT_SETTING = ("seed", "experiment")',
        'NOT_SETTING = ("experiment",)',
        ("tests/test_report.py::test_the_record_carries_the_setting_without_the_seed",),
    ),
    Mutant(
        "explicit seeds.* overrides are left out of the setting",
        "runners/identity.py",
        'NOT_SETTING = ("seed", "experiment")',
        'NOT_SETTING = ("seed", "experiment", "seeds")',
        ("tests/test_report.py::test_the_record_carries_the_setting_without_the_seed",),
    ),
    Mutant(
        "measured speed-up computed pruned / dense",
        "analysis/speed.py",
        '"speedup": reference / measured}',
        '"speedup": measured / reference}',
        (SPEED_REPORT,),
    ),
    Mutant(
        "the table's measured speed-up is the masked network's",
        "analysis/speed.py",
        'measured = measured[measured["kernel"] != MASKED]',
        'measured = measured[measured["kernel"] == MASKED]',
        (SPEED_REPORT,),
    ),
    Mutant(
        "the table's speed-up at the smallest batch instead of the throughput batch",
        "analysis/speed.py",
        'top = rows[rows["batch"] == rows["batch"].max()].iloc[0]',
        'top = rows[rows["batch"] == rows["batch"].min()].iloc[0]',
        (SPEED_REPORT,),
    ),
    Mutant(
        "layer collapse read from the wrong field",
        "analysis/collapse.py",
        'records["_collapse"] = record_field(records, "layer_collapse").map(_flag)',
        'records["_collapse"] = record_field(records, "sparsity_set_by_method").map(_flag)',
        (SPEED_REPORT,),
    ),
    Mutant(
        "the smallest layer density is the largest",
        "analysis/collapse.py",
        "name = min(densities, key=lambda n: (densities[n], n))",
        "name = max(densities, key=lambda n: (densities[n], n))",
        (SPEED_REPORT,),
    ),
    Mutant(
        "record fields under outputs are not read",
        "analysis/records.py",
        'for prefix in ("", f"{OUTPUTS}.")]',
        'for prefix in ("",)]',
        (SPEED_REPORT,),
    ),
    Mutant(
        "sparse export: auto takes the slowest kernel",
        "runners/export.py",
        "return min(ms, key=lambda name: ms[name]), {",
        "return max(ms, key=lambda name: ms[name]), {",
        (f"{EXPORT}::test_auto_exports_the_kernel_fastest_at_the_throughput_batch",),
    ),
    Mutant(
        "sparse export: speed-up computed exported / dense",
        "runners/export.py",
        '"speedup": {b: latency["dense"][b] / latency["exported"][b] for b in latency["dense"]},',
        '"speedup": {b: latency["exported"][b] / latency["dense"][b] for b in latency["dense"]},',
        (f"{EXPORT}::test_auto_exports_the_kernel_fastest_at_the_throughput_batch",),
    ),
    Mutant(
        "sparse export: the dense model traced instead of the sparse network",
        "runners/export.py",
        "traced = torch.jit.trace(network, x, check_trace=False)",
        "traced = torch.jit.trace(model, x, check_trace=False)",
        (f"{EXPORT}::test_the_sparse_export_runs_the_stored_weights_through_the_kernel_and_times_itself",),
    ),
    Mutant(
        "an old flat record's method fields are dropped, not moved into outputs",
        "foundations/record.py",
        'out["outputs"] = {k: v for k, v in flat.items() if v is not None}',
        'out["outputs"] = {}',
        (f"{OUTPUTS}::test_an_old_flat_record_reads_with_its_method_fields_as_outputs",),
    ),
    Mutant(
        "a method's name and sparsity are hashed against its own defaults (they drop out of its hashes)",
        "methods/pipeline/api.py",
        'HASH_DEFAULTS: ClassVar[Mapping[str, Any]] = {"name": "dense", "sparsity": 0.0}',
        "HASH_DEFAULTS: ClassVar[Mapping[str, Any]] = {}",
        (f"{OUTPUTS}::test_a_method_config_hashes_its_name_and_sparsity_without_declaring_it",),
    ),
    Mutant(
        "a train stage's codec leaves out the early-stopping iteration",
        "methods/pipeline/results.py",
        '            "early_stop_iteration": self.early_stop_iteration,\n',
        "",
        (f"{OUTPUTS}::test_every_stored_stage_result_writes_back_the_json_it_was_read_from",),
    ),
    Mutant(
        "ThiNet's k-th fine-tune takes the data order of the (k-1)-th",
        "foundations/seeds.py",
        "return data_seed + _STEP_STRIDE * (step + 1)",
        "return data_seed + _STEP_STRIDE * step",
        (f"{OUTPUTS}::test_every_stored_stage_result_writes_back_the_json_it_was_read_from",),
    ),
    Mutant(
        "BN re-estimation keeps the stale running statistics",
        "methods/pipeline/batchnorm.py",
        "bn.reset_running_stats()  # mean 0",
        "pass  # mean 0",
        (f"{BN}::test_re_estimated_statistics_equal_the_hand_computed_ones",),
    ),
    Mutant(
        "BN re-estimation as an EMA (momentum 0.1) instead of the cumulative average",
        "methods/pipeline/batchnorm.py",
        "bn.momentum = None",
        "bn.momentum = bn.momentum",
        (f"{BN}::test_re_estimated_statistics_equal_the_hand_computed_ones",),
    ),
    Mutant(
        "BN re-estimation with BatchNorm in eval mode",
        "methods/pipeline/batchnorm.py",
        "            bn.train()",
        "            bn.eval()",
        (f"{BN}::test_re_estimated_statistics_equal_the_hand_computed_ones",),
    ),
    Mutant(
        "BN re-estimation with dropout on (the whole network in train mode)",
        "methods/pipeline/batchnorm.py",
        "        model.eval()",
        "        model.train()",
        (f"{BN}::test_re_estimated_statistics_equal_the_hand_computed_ones",),
    ),
    Mutant(
        "the prune stage does not re-estimate BN statistics",
        "runners/experiment.py",
        "            if calibrate is not None:\n                calibrate(pruned)",
        "            if False:\n                calibrate(pruned)",
        (f"{BN}::test_the_prune_stage_stores_statistics_of_the_masked_network_on_seeded_training_batches",),
    ),
    Mutant(
        "BN re-estimated on the test split",
        "methods/pipeline/unstructured.py",
        "data = stages.data.train.subset(n * size",
        "data = stages.data.test.subset(n * size",
        (f"{BN}::test_the_prune_stage_stores_statistics_of_the_masked_network_on_seeded_training_batches",),
    ),
    Mutant(
        "method.recalibrate_bn missing from the prune stage's hash",
        "methods/pipeline/unstructured.py",
        'if k not in ("name", "sparsity", "recovery", "rounds", "prune_from", *AFTER_THE_MASK)',
        'if k not in ("name", "sparsity", "recovery", "rounds", "prune_from", "recalibrate_bn", *AFTER_THE_MASK)',
        (f"{BN}::test_the_number_of_batches_is_in_the_prune_stage_hash_and_zero_is_the_default",),
    ),
    Mutant(
        "OBD measures the loss increase with the stale BN statistics under recalibrate_bn",
        "methods/obd.py",
        "            if calibrate is not None:\n                calibrate(pruned)",
        "            if False:\n                calibrate(pruned)",
        (f"{BN}::test_obd_measures_the_loss_increase_of_the_re_estimated_network",),
    ),
    Mutant(
        "matched budget off by one epoch",
        "runners/config.py",
        "total = survey.dense_epochs + survey.recovery_epochs",
        "total = survey.dense_epochs + survey.recovery_epochs - 1",
        (f"{BUDGET}::test_matched_rule_gives_every_arm_the_same_epochs_from_init",),
    ),
    Mutant(
        "LR rewinding starting one epoch early",
        "methods/pipeline/recover.py",
        "    return total - retrain\n",
        "    return max(total - retrain - batches_per_epoch, 0)\n",
        (f"{BUDGET}::test_each_recovery_protocol_trains_with_its_papers_lr_trace",),
    ),
    Mutant(
        "integrated LR missing the last step",
        "foundations/training/budget.py",
        '"lr_integral": sum(lr_trace(cfg, per_epoch, start, end)),',
        '"lr_integral": sum(lr_trace(cfg, per_epoch, start, end - 1)),',
        (f"{BUDGET}::test_magnitude_fine_tune_budget_is_the_hand_count",),
    ),
    Mutant(
        "examples seen ignore each epoch's short last batch",
        "foundations/training/budget.py",
        "return epochs * n_examples + offset * batch_size",
        "return (epochs * per_epoch + offset) * batch_size",
        (f"{BUDGET}::test_examples_count_each_epochs_short_last_batch",),
    ),
    Mutant(
        "training multiply-adds not mask-aware",
        "runners/experiment.py",
        'forward = measure.count_flops(trained, self.data.input_shape)["flops_effective"]',
        'forward = measure.count_flops(trained, self.data.input_shape)["flops_dense"]',
        (f"{BUDGET}::test_magnitude_fine_tune_budget_is_the_hand_count",),
    ),
    Mutant(
        "budget counts a stage the result does not descend from",
        "foundations/training/budget.py",
        'if spent["hash"] in behind and all(',
        'if spent["hash"] in behind | {spent["hash"]} and all(',
        (f"{BUDGET}::test_lottery_counts_every_level_and_scratch_only_its_own_training",),
    ),
    Mutant(
        "calibration picks the smallest λ within the tolerance",
        "analysis/calibration.py",
        "    chosen = max(within)",
        "    chosen = min(within)",
        (
            f"{CALIBRATE}::test_lam_is_the_largest_whose_paired_validation_cost_is_within_half_a_point_boundary_included",
        ),
    ),
    Mutant(
        "calibration measures λ's cost on the test split",
        "analysis/calibration.py",
        "_mean([m.dense_val_acc - m.val_acc for m in runs])",
        "_mean([m.dense_test_acc - m.test_acc for m in runs])",
        (
            f"{CALIBRATE}::test_lam_is_the_largest_whose_paired_validation_cost_is_within_half_a_point_boundary_included",
        ),
    ),
    Mutant(
        "calibration refuses a cost exactly at the tolerance (< for ≤)",
        "analysis/calibration.py",
        "Point(value, runs, cost, cost <= tolerance)",
        "Point(value, runs, cost, cost < tolerance)",
        (
            f"{CALIBRATE}::test_lam_is_the_largest_whose_paired_validation_cost_is_within_half_a_point_boundary_included",
        ),
    ),
    Mutant(
        "calibration picks the fine-tuning LR on the test split",
        "analysis/calibration.py",
        "round(_mean([m.val_acc for m in runs]), _DIGITS)",
        "round(_mean([m.test_acc for m in runs]), _DIGITS)",
        (f"{CALIBRATE}::test_the_fine_tuning_lr_is_the_best_mean_validation_accuracy_ties_to_the_smaller",),
    ),
    Mutant(
        "calibration breaks a fine-tuning LR tie towards the larger scale",
        "analysis/calibration.py",
        "chosen = min(p.value for p in points if p.score == best)",
        "chosen = max(p.value for p in points if p.score == best)",
        (f"{CALIBRATE}::test_the_fine_tuning_lr_is_the_best_mean_validation_accuracy_ties_to_the_smaller",),
    ),
    Mutant(
        "calibration reads λ's accuracy after fine-tuning instead of after sparsity training",
        "runners/calibrate.py",
        "            if grid.key == LAM:\n                assert sparsity is not None",
        "            if False:\n                assert sparsity is not None",
        (f"{CALIBRATE}::test_a_real_run_writes_the_grid_from_the_store_and_a_second_run_trains_nothing",),
    ),
]


def copy_repo(into: Path) -> Path:
    target = into / "repo"
    shutil.copytree(ROOT, target, ignore=IGNORE)
    return target


def stale(repo: Path, mutant: Mutant) -> str | None:
    """Why the mutant cannot be applied to ``repo`` (its file is gone or its old text is not there exactly once)."""
    path = repo / mutant.file
    if not path.exists():
        return f"{mutant.file} does not exist"
    found = path.read_text().count(mutant.old)
    return None if found == 1 else f"its old snippet occurs {found} times in {mutant.file}"


def apply(repo: Path, mutant: Mutant) -> None:
    path = repo / mutant.file
    path.write_text(path.read_text().replace(mutant.old, mutant.new))


def pytest(repo: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "WANDB_MODE": "disabled"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    lines = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return proc.returncode, (lines[-1].strip("= ") if lines else (proc.stdout + proc.stderr).strip()[-300:])


def imports_from(repo: Path) -> Path:
    """Where the copy's Python imports the project from (it must be the copy, not an editable install)."""
    out = subprocess.run(
        [sys.executable, "-c", "import methods; print(methods.__file__)"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(out).resolve()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only mutants whose name contains one of these words")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or any(w.lower() in m.name.lower() for w in args.names)]
    if args.list or not chosen:
        for m in MUTANTS:
            print(f"{m.name:62} {m.file}  [{' '.join(m.tests)}]")
        return 0 if args.list else 2
    with tempfile.TemporaryDirectory(prefix="prunelab-mutants-") as tmp:
        baseline = copy_repo(Path(tmp) / "baseline")
        if not imports_from(baseline).is_relative_to(baseline.resolve()):
            print(f"error: the copy imports the project from {imports_from(baseline)}, not itself", file=sys.stderr)
            return 2
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        start = time.perf_counter()
        code, summary = pytest(baseline, tests, args.timeout)
        print(f"baseline (unmutated): {summary} ({time.perf_counter() - start:.0f} s)")
        if code != 0:
            print("error: the tests fail without any mutant; fix them first", file=sys.stderr)
            return 2
        caught = survived = broken = 0
        for i, mutant in enumerate(chosen, start=1):
            why = stale(ROOT, mutant)
            if why is not None:
                broken += 1
                print(f"[{i:2}/{len(chosen)}] STALE     {mutant.name}: {why}")
                continue
            repo = copy_repo(Path(tmp) / f"mutant{i}")
            apply(repo, mutant)
            start = time.perf_counter()
            code, summary = pytest(repo, mutant.tests, args.timeout)
            elapsed = time.perf_counter() - start
            if code == 1:
                caught += 1
                verdict = "caught   "
            elif code == 0:
                survived += 1
                verdict = "SURVIVED "
            else:
                broken += 1
                verdict = "ERROR    "  # collection error, timeout, crash: proves nothing either way
            print(f"[{i:2}/{len(chosen)}] {verdict} {mutant.name}  ({summary}; {elapsed:.0f} s)")
            shutil.rmtree(repo, ignore_errors=True)
    print(f"mutants: {len(chosen)}, caught {caught}, survived {survived}, stale or error {broken}")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
