"""The one task interface and its registry.

A task is a frozen :class:`TaskSpec` plus a :class:`Task` that knows how to turn raw files (or its
generator) into the cache of :mod:`lra.data.cache`. ``prepare()`` builds the cache once and returns
its metadata; the DataModule only reads the cache (it never touches raw files or the network).

Adding a task: ``lra/tasks/<name>.py`` with ``@register_task("<name>")`` on a :class:`Task`
subclass whose ``Config`` dataclass lists every key of ``conf/task/<name>.yaml``; an explicit import
in ``lra/tasks/__init__.py``; tests (spec values, a reader on small files, a smoke run).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lra.data.cache import CacheWriter, cache_name, read_meta

log = logging.getLogger(__name__)

TASK_REGISTRY: dict[str, type["Task"]] = {}


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about a task.

    ``pad_id``: token id treated as padding when building the mask (mask = input_ids != pad_id);
    ``None`` means every position is real. ``dual_input``: batches carry ``input_ids_1``/``mask_1``.
    """

    name: str
    seq_len: int
    vocab_size: int
    num_classes: int
    pad_id: int | None = 0
    dual_input: bool = False


class Task:
    """Base class: subclasses define ``Config`` (a dataclass), ``spec`` and ``build(writer)``."""

    name: str = ""
    Config: type = object
    fields_: tuple[str, ...] = ("input_ids",)  # token fields per split (retrieval adds input_ids_1)
    splits: tuple[str, ...] = ("train", "val", "test")

    def __init__(self, cfg: dict, cache_root: str | Path):
        cfg = dict(cfg)
        prepared = cfg.pop("prepared", None)  # a key of every conf/task/*.yaml, handled here for all tasks
        known = {f.name for f in fields(self.Config)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise TypeError(f"conf/task/{self.name}.yaml: unknown key(s) {unknown}; valid keys: "
                            f"{sorted(known | {'prepared'})}")
        self.cfg = self.Config(**cfg)
        self.cache_root = Path(cache_root)
        self.prepared = Path(prepared) if prepared else None

    # -- to implement --------------------------------------------------------------------------------
    @property
    def spec(self) -> TaskSpec:  # pragma: no cover - interface
        raise NotImplementedError

    def cache_params(self) -> dict:
        """Every parameter that changes the cached arrays (including a key identifying the raw source)."""
        raise NotImplementedError

    def build(self, writer: CacheWriter) -> dict:
        """Read or generate the raw data and write every split; return extra metadata (e.g. vocab)."""
        raise NotImplementedError

    def expected_split_counts(self) -> dict[str, int] | None:
        """Split sizes that ``lra.prepare`` must find (None = no fixed expectation for this config)."""
        return None

    # -- shared ----------------------------------------------------------------------------------------
    def cache_dir(self) -> Path:
        return self.cache_root / self.name / cache_name(self.cache_params())

    def prepare(self) -> dict:
        """Build the cache if missing (atomically) and return its metadata."""
        if self.prepared is not None:
            return self._use_prepared(self.prepared)
        final = self.cache_dir()
        meta = read_meta(final)
        if meta is not None:
            log.info("using cached %s data: %s", self.name, final)
            return dict(meta, cache_dir=str(final))
        log.info("building %s cache in %s", self.name, final)
        final.parent.mkdir(parents=True, exist_ok=True)
        writer = CacheWriter(final)
        try:
            extra = self.build(writer)
            meta = writer.commit({"task": self.name, "spec": asdict(self.spec), "params": self.cache_params(),
                                  **(extra or {})})
        except BaseException:
            writer.abort()
            raise
        return dict(meta, cache_dir=str(final))


    def _use_prepared(self, folder: Path) -> dict:
        """``task.prepared=FOLDER``: use a cache folder written by ``python -m lra.prepare`` as is, without the raw
        data (e.g. on a compute node that has only the cache). Checked: the task name, the spec the model is built
        from, and every stored preprocessing parameter that is also a key of this task's config. The raw source
        itself cannot be re-hashed without the raw files: its key and the data fingerprint are logged and land in
        the run record."""
        meta = read_meta(folder)
        where = f"task.prepared={folder}"
        if meta is None:
            raise FileNotFoundError(f"{where}: no meta.json there; point it at a folder that `python -m lra.prepare` "
                                    f"wrote (<cache_dir>/{self.name}/<parameters>-<hash>/)")
        if meta.get("task") != self.name:
            raise ValueError(f"{where}: the folder holds task {meta.get('task')!r}, not {self.name!r}")
        if meta.get("spec") != asdict(self.spec):
            raise ValueError(f"{where}: stored spec {meta.get('spec')} differs from this config's {asdict(self.spec)}")
        config = asdict(self.cfg)
        stored = meta.get("params") or {}
        differ = {k: (stored[k], config[k]) for k in sorted(set(stored) & set(config)) if stored[k] != config[k]}
        if differ:
            raise ValueError(f"{where}: prepared with other parameters (stored, configured): {differ}; prepare a "
                             f"cache with this config (`python -m lra.prepare task={self.name} ...`) or change it")
        log.info("using prepared %s cache %s as is (source %s, fingerprint %s); raw data not read", self.name, folder,
                 stored.get("source"), meta.get("fingerprint"))
        return dict(meta, cache_dir=str(folder))


def register_task(name: str):
    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"@register_task({name!r}) needs a Task subclass")
        if name in TASK_REGISTRY:
            raise ValueError(f"task {name!r} registered twice")
        cls.name = name
        TASK_REGISTRY[name] = cls
        return cls
    return deco


def build_task(task_cfg: dict, cache_root) -> Task:
    cfg = dict(task_cfg)
    name = cfg.pop("name", None)
    if name not in TASK_REGISTRY:
        raise KeyError(f"unknown task {name!r}; registered: {sorted(TASK_REGISTRY)}")
    return TASK_REGISTRY[name](cfg, cache_root)
