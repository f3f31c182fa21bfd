"""The jobs of a command line, composed by Hydra before the first one starts.

``Composer`` expands a command line into the jobs Hydra launches (Hydra's own argument and override parsers and
``BasicSweeper.split_arguments``, after the experiment config's ``hydra.sweeper.params``) and composes each job with
Hydra's own composition code. ``check_command`` (``runners.train``, before ``@hydra.main`` runs) validates every
composed job with ``runners.config.validate`` and adds the checks only a command line allows (a value the chosen
method ignores, ``train.epochs`` under ``train.iterations``); Hydra's errors become one line naming the override.
The reproduction (``runners.reproduce``) composes its sweeps' jobs with the same ``Composer``.

What repeats is composed once (``hydra.compose`` costs 0.1-0.3 s a call here). Jobs differ mostly in plain values
(``level``, ``seed``), so each distinct set of group choices (``+experiment/arm=snip``) is composed once — Hydra's
defaults list, then its merge, as ``ConfigLoaderImpl.load_configuration`` does, without Hydra's own ``hydra`` node,
which no job's config reads — and a job's value overrides are applied by Hydra's override code
(``ConfigLoaderImpl._apply_overrides_to_config``), as Hydra applies them once the defaults tree is composed (value
overrides never change it). The 60 jobs of ``survey_mlp`` compose 13 configs. These are Hydra internals (hydra-core
is pinned below 1.4); ``tests/test_jobs.py`` checks every job of the survey and of the reproduction against
``hydra.compose``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Optional

from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.config_repository import CachingConfigRepository
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.defaults_list import create_defaults_list
from hydra._internal.utils import get_args_parser
from hydra.conf import HydraConf
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from datasets import identity as data_identity
from foundations.errors import UserError
from methods import get_method, registry
from runners.config import CONF, GROUPS, ExperimentConfig, check_results_folder, register_schemas, validate

# What a group sweep may change besides its own node: an experiment config or an arm overrides any group.
_CHANGED_BY = {"experiment": ("model", "dataset", "method", "train", "logger")}
# Hydra flags that run no job (help, shell completion, printing the config) or compose another config.
_NOT_A_RUN = ("help", "hydra_help", "cfg", "info", "shell_completion", "experimental_rerun")
_OTHER_CONFIG = ("config_path", "config_name", "config_dir")


def closest(name: str, options: list[str]) -> str:
    """`` (did you mean X?)`` for the nearest option, or nothing when none is near."""
    near = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


class CheckError(UserError):
    """A one-line error about a command line; ``kind`` says what is wrong: ``choice`` (a group option), ``key`` (a
    key nobody has), ``value`` (a type or a range) or ``other``."""

    def __init__(self, message: str, kind: str = "other", *, key: str = "", option: str = ""):
        super().__init__(message)
        self.kind = kind
        self.key = key  # the unknown key (kind "key")
        self.option = option  # the option of the key's group that lacks it (`dense` for method.scope)


@dataclass
class Command:
    """A command line as Hydra runs it."""

    argv: list[str]  # what @hydra.main gets: a swept group's field overrides turned into one-value sweeps
    jobs: list[list[str]]  # each job's overrides (hydra.* left out), in launch order
    hydra: list[str]  # the hydra.* and hydra/ overrides, the same for every job
    given: list[Override] = field(default_factory=list)  # the command line's own value overrides
    swept: set[str] = field(default_factory=set)  # groups swept on the command line or by the experiment config
    changed: set[str] = field(default_factory=set)  # groups the sweep changes per job (their fields: per job only)
    multirun: bool = False


class Composer:
    """Hydra's composition of a job's config, with what a sweep repeats done once (module docstring).

    Each job is composed as ``hydra.compose`` composes it (Hydra's defaults list, merge and override code, in that
    order), except that the ``hydra`` node — Hydra's own settings (launcher, logging, output folders), a screen of
    configs to merge per composition, and nothing a job's config reads — is neither composed nor returned:
    ``tests/test_jobs.py`` checks the result equals ``hydra.compose`` for every job of the survey and of the
    reproduction. The YAML files and schemas are read once per composer.

    A context manager: it initializes Hydra for ``conf/`` unless Hydra already is (inside a job), and resolves
    ``${hydra:runtime.cwd}`` (``paths.results``) to the current folder, as a job (``hydra.job.chdir=false``) does."""

    def __init__(self) -> None:
        self._parser = OverridesParser.create()
        self._stack = ExitStack()
        self._bases: dict[tuple[str, ...], tuple[list[str], DictConfig]] = {}
        self._listings: dict[tuple[str, str], list[str]] = {}
        self._last: dict[tuple[str, ...], tuple[Optional[tuple[str, ...]], DictConfig]] = {}
        self._loader: ConfigLoaderImpl
        self._repo: CachingConfigRepository

    def __enter__(self) -> Composer:
        register_schemas()
        if not GlobalHydra.instance().is_initialized():
            self._stack.enter_context(initialize_config_dir(config_dir=str(CONF), version_base="1.3"))
        loader = GlobalHydra.instance().config_loader()
        assert isinstance(loader, ConfigLoaderImpl)
        self._loader = loader
        self._repo = CachingConfigRepository(self._loader.repository)
        hydra_config = HydraConfig.instance()
        self._stack.callback(setattr, hydra_config, "cfg", hydra_config.cfg)
        if hydra_config.cfg is None:  # outside a job: the run's hydra.runtime.cwd is the current folder
            runtime = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
            runtime.hydra.runtime.cwd = os.getcwd()
            hydra_config.set_config(runtime)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # ------------------------------------------------------------------------------------------------ parsing
    def parse(self, line: str) -> Override:
        try:
            return _parse(self._parser, line)
        except HydraException as err:
            raise CheckError(f"{line}: not an override ({_first_line(err)})", "value") from None

    def is_group(self, override: Override) -> bool:
        """Hydra's rule (``defaults_list.Overrides``): a group override unless the key is no group or the value a
        dict."""
        parent, _, name = override.key_or_group.rpartition("/")
        return name in self._listing(parent, "groups") and not isinstance(override.value(), dict)

    def _listing(self, group: str, what: str) -> list[str]:
        """The groups under ``group`` (``what="groups"``) or its options, as Hydra lists them (each listing copies
        Hydra's repository: once per composer)."""
        if (group, what) not in self._listings:
            loader = self._loader
            self._listings[group, what] = (
                loader.list_groups(group) if what == "groups" else loader.get_group_options(group)
            )
        return self._listings[group, what]

    # ------------------------------------------------------------------------------------------------ jobs
    def command(self, argv: list[str]) -> Optional[Command]:
        """The command line ``argv`` (without the program) as Hydra runs it; None when it runs no job here (help,
        shell completion, ``--cfg``, another config) or Hydra's own flag parsing refuses it."""
        if "--version" in argv:
            return None
        args, unknown = get_args_parser().parse_known_args(argv)
        if unknown or any(getattr(args, a, None) for a in _NOT_A_RUN + _OTHER_CONFIG):
            return None
        parsed = [self.parse(line) for line in args.overrides]
        hydra = [_line(o) for o in parsed if o.is_hydra_override()]
        task = [o for o in parsed if not o.is_hydra_override()]
        given = [o for o in task if not self.is_group(o)]
        if not args.multirun:
            sweep = next((o for o in task if o.is_sweep_override()), None)
            if sweep is not None:
                raise CheckError(
                    f"{_line(sweep)}: a comma list is a sweep; add -m to run one job per value (a list value is "
                    f"key=[a,b], a string with a comma key='a,b')",
                    "value",
                )
            return Command(argv, [[_line(o) for o in task]], hydra, given)
        static = [_line(o) for o in task if self.is_group(o) and not o.is_sweep_override()]
        params, sweep_config = self._base([*hydra, *static])
        fixed = {o.key_or_group for o in task if not o.is_sweep_override()}
        swept = {
            o.key_or_group
            for o in [*task, *map(self.parse, params)]
            if o.is_sweep_override() and self.is_group(o) and o.key_or_group not in fixed
        }
        changed = {g for s in swept for g in _CHANGED_BY.get(s.split("/")[0], (s,))}
        lines = self._one_value_sweeps(task, changed, copy.deepcopy(sweep_config))
        rewritten = {_line(before): after for before, after in zip(task, lines)}
        argv = [rewritten.get(a, a) for a in argv]
        try:
            jobs = sweep_jobs(params, lines)
        except HydraException as err:
            raise CheckError(_first_line(err), "value") from None
        return Command(argv, jobs, hydra, given, swept, changed, multirun=True)

    def _one_value_sweeps(self, task: list[Override], changed: set[str], sweep_config: DictConfig) -> list[str]:
        """``-m method=a,b method.scope=x``: Hydra composes the sweep's own config with the default method, which
        has no ``method.scope``. As the one-value sweep ``choice(x)`` the override is applied per job only, to the
        method the job chose. Only an override of a swept group's node that the sweep's own config refuses is
        rewritten; the command line stays as given where Hydra takes it as it is."""
        out = []
        for o in task:
            line = _line(o)
            if o.key_or_group.split(".")[0] in changed and not self.is_group(o) and not o.is_sweep_override():
                try:
                    self._apply(o, sweep_config)
                except CheckError:
                    if o.is_delete() or o.value() is None:
                        raise CheckError(
                            f"{line}: the sweep's own config (before each job chooses its "
                            f"{o.key_or_group.split('.')[0]}) has no such key, and Hydra cannot sweep a deletion or "
                            f"null; set it in an experiment config (conf/experiment/arm/)",
                            "value",
                        ) from None
                    line = f"{o.get_key_element()}=choice({o.get_value_element_as_str()})"
            out.append(line)
        return out

    # ------------------------------------------------------------------------------------------------ configs
    def compose(
        self,
        job: list[str],
        hydra: tuple[str, ...] | list[str] = (),
        errors: Optional[list[CheckError]] = None,
        *,
        reuse: bool = False,
    ) -> DictConfig:
        """The config of one job (its overrides as Hydra launches them), without the ``hydra`` node. With
        ``errors``, a value override Hydra refuses is added there and the next ones are still applied.

        ``reuse``: the config returned for the previous job of the same group choices is updated in place when both
        jobs set the same keys to plain values (``level=3 seed=0``; what a sweep's jobs mostly differ in): each key
        is overwritten whole, so the result is the fresh composition, without copying the base again."""
        parsed = [self.parse(line) for line in job]
        groups = [_line(o) for o in parsed if self.is_group(o)]
        values = [o for o in parsed if not self.is_group(o)]
        base_key = (*hydra, *groups)
        keys = tuple(o.key_or_group for o in values) if all(map(_plain, values)) else None
        last = self._last.get(base_key)
        if reuse and keys is not None and last is not None and last[0] == keys:
            cfg = last[1]
        else:
            cfg = copy.deepcopy(self._base(list(base_key))[1])
        for override in values:
            try:
                self._apply(override, cfg)
            except CheckError as err:
                keys = None  # a partly applied job is no start for the next one
                if errors is None:
                    raise
                errors.append(err)
        self._last[base_key] = (keys, cfg)
        return cfg

    def composed(
        self, command: Command, errors: Optional[list[CheckError]] = None
    ) -> Iterator[tuple[list[str], DictConfig]]:
        """Every job with its config, in order; a config is valid until the next one is yielded (``reuse``). A field
        of a swept group that some option lacks (``-m method=dense,magnitude method.scope=x``) is one error naming
        those options, raised after the last job; with ``errors``, errors are added there instead of raised and the
        jobs that compose are yielded."""
        lacking: dict[str, list[str]] = {}
        for job in command.jobs:
            found: list[CheckError] = []
            cfg = self.compose(job, command.hydra, found, reuse=True)
            for err in found:
                if err.kind == "key" and err.key.split(".")[0] in command.changed and err.option:
                    options = lacking.setdefault(err.key, [])
                    options += [err.option] if err.option not in options else []
                elif errors is None:
                    raise err
                else:
                    errors.append(err)
            if not found:
                yield job, cfg
        for key, options in lacking.items():
            group, _, name = key.partition(".")
            err = CheckError(
                f"{key}: {', '.join(options)} has no field {name!r}; sweep {group}s that share it, or give each "
                f"{group} its own settings in an experiment config (conf/experiment/arm/)",
                "key",
            )
            if errors is None:
                raise err
            errors.append(err)

    def _base(self, overrides: list[str]) -> tuple[list[str], DictConfig]:
        """The composition of group overrides (the ``hydra/`` ones only checked: Hydra's node is not composed), as
        ``ConfigLoaderImpl.load_configuration`` does it: the sweeper's params the config files set (``key=values``),
        and the config without its ``hydra`` node."""
        self._check_choices(overrides)
        groups = [self.parse(line) for line in overrides if not self.parse(line).is_hydra_override()]
        key = tuple(map(_line, groups))
        if key not in self._bases:
            try:
                tree = create_defaults_list(self._repo, "config", groups, prepend_hydra=False, skip_missing=False)
                full = self._loader._compose_config_from_defaults_list(tree.defaults, self._repo)
            except MissingConfigException as err:
                raise CheckError(_missing(err), "choice") from None
            except (HydraException, OmegaConfBaseException) as err:
                raise CheckError(f"{' '.join(key)}: {_first_line(err)}") from None
            OmegaConf.set_struct(full, True)
            params = [f"{k}={v}" for k, v in (OmegaConf.select(full, "hydra.sweeper.params") or {}).items()]
            with open_dict(full):
                full.pop("hydra", None)
            self._bases[key] = (params, full)
        return self._bases[key]

    def _check_choices(self, overrides: list[str]) -> None:
        """A group option that does not exist, in one line with the nearest (Hydra's message is a screen)."""
        for override in map(self.parse, overrides):
            value = override.value()
            if not self.is_group(override) or not isinstance(value, str):
                continue
            options = self._listing(override.key_or_group, "options")
            if value not in options:
                raise CheckError(_no_option(override.key_or_group, value, options), "choice")

    def _apply(self, override: Override, cfg: DictConfig) -> None:
        try:
            ConfigLoaderImpl._apply_overrides_to_config([override], cfg)
        except HydraException as err:
            raise _override_error(override, cfg, err) from None

    def method_defaults(self, name: str) -> DictConfig:
        """``conf/method/<name>.yaml`` composed over its schema: a method's own defaults."""
        return self.compose([f"method={name}"]).method


@functools.cache
def method_defaults(name: str, key: str = "method") -> DictConfig:
    """``method=<name>`` composed by Hydra (its YAML over its schema): a method's own configuration, e.g. of a source
    experiment named by its method (scratch, random's shuffle). Cached per process; never mutate it."""
    with Composer() as composer:
        try:
            return composer.method_defaults(name)
        except CheckError:
            raise UserError(f"{key}: no method {name!r}; choose one of {', '.join(sorted(registry()))}") from None


def sweep_jobs(params: list[str], overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of a sweep config's ``hydra.sweeper.params`` (``key=values``) and a
    command line's overrides (later keys replace earlier ones in place; the last axis varies fastest)."""
    parsed = OverridesParser.create().parse_overrides([*params, *overrides])
    return BasicSweeper.split_arguments(parsed, None)[0]


@functools.lru_cache(maxsize=4096)
def _parse(parser: OverridesParser, line: str) -> Override:
    return parser.parse_overrides([line])[0]


def _plain(override: Override) -> bool:
    """A plain assignment of a scalar: it replaces whatever the key held."""
    plain = not (override.is_add() or override.is_force_add() or override.is_delete())
    return plain and not isinstance(override.value(), (dict, list))


def _line(override: Override) -> str:
    assert override.input_line is not None  # parsed from a command-line string
    return override.input_line


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _no_option(group: str, value: str, options: list[str]) -> str:
    if group == "model" and value in _torchvision_models():
        return (
            f"model={value}: no such option; torchvision's {value} is model=torchvision model.arch={value} "
            f"(built-in models: {', '.join(o for o in options if o not in ('torchvision', 'target'))})"
        )
    return f"{group}={value}: no such option{closest(value, options)}; choose one of {', '.join(options)}"


@functools.lru_cache(maxsize=1)
def _torchvision_models() -> frozenset[str]:
    import torchvision.models  # only on this error path: the model zoo's names take a second to list

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def _missing(err: MissingConfigException) -> str:
    group, _, value = (err.missing_cfg_file or "").rpartition("/")
    if group and err.options:
        return _no_option(group, value, list(err.options))
    return _first_line(err)


def _override_error(override: Override, cfg: DictConfig, err: HydraException) -> CheckError:
    """Hydra's error for a value override, as one line: an unknown key with the nearest known one, else the first
    line of OmegaConf's reason (a type), else Hydra's first line."""
    key = override.key_or_group
    cause = err.__cause__
    if override.is_delete():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        found = value is not None or _has_key(cfg, key)
        reason = "it holds null already (Hydra deletes only keys with a value)" if found else "no such key"
        return CheckError(f"~{key}: {reason}; drop the override", "other" if found else "key")
    if isinstance(cause, OmegaConfBaseException) and type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        return unknown_key(key, cfg)
    if isinstance(cause, OmegaConfBaseException):
        return CheckError(f"{getattr(cause, 'full_key', None) or key}: {_first_line(cause)}", "value")
    return CheckError(f"{_line(override)}: {_first_line(err)}")


def _has_key(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node


def unknown_key(key: str, cfg: DictConfig) -> CheckError:
    """``modle=lenet5`` / ``train.epoch=3``: the nearest key that exists where the unknown one was asked for."""
    parts = key.split(".")
    node: Any = cfg
    depth = 0
    while depth < len(parts) - 1 and isinstance(node, DictConfig) and parts[depth] in node:
        node, depth = node[parts[depth]], depth + 1
    if depth == 0:
        known = sorted({*map(str, cfg.keys()), *GROUPS, "hydra"})
        return CheckError(
            f"{key}: no such config group or key{closest(parts[0], known)}; groups: {', '.join(GROUPS)}", "key"
        )
    parent = ".".join(parts[:depth])
    known = [f"{parent}.{k!s}" for k in node] if isinstance(node, DictConfig) else []
    option = (
        str(OmegaConf.select(cfg, f"{parts[0]}.name", default="")) if isinstance(cfg.get(parts[0]), DictConfig) else ""
    )
    return CheckError(
        f"{key}: no such key{closest('.'.join(parts[: depth + 1]), known)}", "key", key=key, option=option
    )


# ------------------------------------------------------------------------------------------------ the checks
def composition_errors(argv: list[str]) -> list[CheckError]:
    """What Hydra refuses in composing the jobs of ``argv`` (unknown options, keys, types), each as one line."""
    errors: list[CheckError] = []
    with Composer() as composer:
        try:
            command = composer.command(argv)
            for _ in composer.composed(command, errors) if command is not None else ():
                pass
        except CheckError as err:  # a group option or the sweep itself: nothing further composes
            errors.append(err)
    return errors


def check_command(argv: list[str]) -> list[str]:
    """Compose and validate every job of ``argv`` before any starts; the command line for ``@hydra.main``.

    Beyond ``validate``: ``paths.results`` is a writable folder, a folder dataset's tree reads (its content digest
    names the data), no job sets a value its method ignores (``Method.ignored_fields``) and no command line gives
    ``train.epochs`` where ``train.iterations`` decides the length. A method sweep's shared value (``-m method=a,b
    method.recovery.epochs=2``) is refused only when no method of the sweep uses it."""
    with Composer() as composer:
        command = composer.command(argv)
        if command is None:
            return argv
        memo: dict = {}
        ignored: list[tuple[str, str]] = []  # (field, message) a job's method ignores
        used: set[str] = set()  # fields some job's method uses
        for job, cfg in composer.composed(command):
            config = validate(cfg, memo=memo)
            _once(memo, ("results", config.paths.results), check_results_folder, config.paths.results)
            _once(memo, ("data", repr(config.dataset)), data_identity, config.dataset)
            check_schedule_override(job, config, composer)
            set_fields, quiet = ignored_values(config)
            ignored += set_fields
            used |= quiet
        for key, message in ignored:
            if not (_given(key, command.given) and _swept_method(command) and key in used):
                raise CheckError(message, "value")
        return command.argv


def _once(memo: dict, key: tuple, check: Any, *args: Any) -> None:
    if key not in memo:
        check(*args)
        memo[key] = True


def _given(key: str, given: list[Override]) -> bool:
    return any(key == o.key_or_group or key.startswith(o.key_or_group + ".") for o in given)


def _swept_method(command: Command) -> bool:
    return any(s.split("/")[0] in ("method", "experiment") for s in command.swept)


def check_schedule_override(job: list[str], config: ExperimentConfig, composer: Composer) -> None:
    """``train.epochs=1`` where the config counts in ``train.iterations`` (which wins) would change nothing."""
    keys = {composer.parse(line).key_or_group for line in job}
    if "train.epochs" in keys and config.train.iterations is not None:
        raise CheckError(
            f"train.epochs: the config sets train.iterations={config.train.iterations}, which decides the length "
            f"(epochs are not read); give train.iterations=N, or train.iterations=null to train for train.epochs",
            "value",
        )


def ignored_values(config: ExperimentConfig) -> tuple[list[tuple[str, str]], set[str]]:
    """The ``method.*`` fields this job sets (unlike the method's defaults: its schema's, which its YAML leaves as
    they are) that its method ignores, each with its one-line refusal; and the fields the job's method uses (a
    method sweep's shared value is for them)."""
    method = get_method(config.method.name)(config.method)
    ignored = method.ignored_fields()
    defaults, mine = asdict(type(config.method)()), asdict(config.method)
    out = []
    for path, reason in ignored.items():
        for leaf in _differing(path, _select(mine, path), _select(defaults, path)):
            users = methods_using(leaf)
            out.append(
                (
                    f"method.{leaf}",
                    f"method.{leaf}: {method.name} ignores it ({reason}); "
                    + (f"methods that use it: {', '.join(users)}" if users else "no method uses it")
                    + ("" if method.name != "dense" else "; choose one with method=<name>"),
                )
            )
    used = {f"method.{leaf}" for leaf in _leaves(mine) if not any(_under(leaf, p) for p in ignored)}
    return out, used


def _select(node: Any, path: str) -> Any:
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _leaves(node: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return out


def _under(leaf: str, path: str) -> bool:
    return leaf == path or leaf.startswith(path + ".")


def _differing(path: str, value: Any, default: Any) -> list[str]:
    if isinstance(value, dict) and isinstance(default, dict) and value and default:
        return [leaf for k in value for leaf in _differing(f"{path}.{k}", value[k], default.get(k))]
    return [path] if value != default else []


@functools.cache
def methods_using(leaf: str) -> list[str]:
    """The methods whose default configuration reads the config field ``leaf`` (a dotted path)."""
    out = []
    for name, cls in sorted(registry().items()):
        config = cls.Config()
        if _has_field(config, leaf) and not any(_under(leaf, p) for p in cls(config).ignored_fields()):
            out.append(name)
    return out


def _has_field(obj: Any, path: str) -> bool:
    for part in path.split("."):
        if not is_dataclass(obj) or part not in {f.name for f in fields(obj)}:
            return False
        obj = getattr(obj, part)
    return True
