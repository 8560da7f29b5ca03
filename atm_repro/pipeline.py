"""Batch reproduction: run the numbered notebooks in order with papermill.

Executed copies go to ``runs/<profile>/notebooks/``; for a profile that writes the
paper's outputs (not smoke), a cleaned copy of each (``publish``: figures inline,
no machine paths, timings or progress bars) also goes to
``notebooks/executed/<profile>/``, committed beside the sources so that a reader
sees the canonical run without running it. A failing notebook stops
the chain with ``PipelineError`` naming the notebook, the failing cell and
the saved partial copy. The caller loads (and so validates) the profile once
(``profiles.load_profile``) and passes it in; its dtypes, model and layers are
checked before any notebook starts (``cache.check_cache_request``: a model the
chain cannot use or a layer beyond its depth stops it there). Each notebook, a
process of its own, loads it once more from the same name and overrides.

Progress: before the chain, an estimate per notebook from the last run's
recorded wall times (``runs/<profile>/stage_times.json``); while a notebook
runs, one line per code cell as it starts (``[cpu] 02_train_saes cell 5/8
(01:12) results = train_profile(...)``), the notebook's own printed lines (its stdout;
progress bars go to stderr and are not relayed) and, after ``HEARTBEAT_S``
without a line, a heartbeat; at the end, where the outputs are and the headline
table.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import papermill as pm
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError

from atm_repro import metrics
from atm_repro.cache import check_cache_request
from atm_repro.config import REPO_ROOT, Profile
from atm_repro.profiles import check_dtypes, companion_profiles, describe_dtypes, load_profile
from atm_repro.report.provenance import output_dirs
from atm_repro.report.results import per_sae, read_results
from atm_repro.report.summaries import labelled, main_table
from atm_repro.runs import notebooks_dir, read_stage_times, record_stage_time

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = NOTEBOOK_DIR / "executed"
WIDGET = "application/vnd.jupyter.widget-view+json"
ENGINE = "atm-repro-progress"
HEARTBEAT_S = 60.0
HEADLINE = ["n_seeds", *(m.id for m in (
    metrics.L0, metrics.EXPLAINED_VARIANCE, metrics.FULL_ABSORPTION, metrics.ABSORPTION_FRACTION,
    metrics.PROBING_TOP1, metrics.STABILITY_MAX_COS))]


class PipelineError(RuntimeError):
    pass


@dataclass
class StageResult:
    notebook: str
    output: Path
    seconds: float


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks, optionally only those whose number or name is in ``only``."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return found
    chosen = [nb for nb in found if any(nb.name.startswith(o) or nb.stem == o for o in only)]
    unknown = [o for o in only if not any(nb.name.startswith(o) or nb.stem == o for nb in found)]
    if unknown:
        raise PipelineError(f"no notebook matches {unknown}; notebooks: {[n.name for n in found]}")
    return chosen


def clock(seconds: float) -> str:
    """``mm:ss`` (``h:mm:ss`` from an hour on)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class CellProgress:
    """Progress lines of one executing notebook: told by ``ProgressEngine`` when a
    cell starts, and written the notebook's stdout (a file-like ``stdout_file``)."""

    def __init__(self, label: str, n_cells: int, log, heartbeat_s: float = HEARTBEAT_S):
        self.label, self.n_cells, self.log = label, n_cells, log
        self.heartbeat_s = heartbeat_s
        self.started = self.last_line = time.perf_counter()
        self.cell, self.partial = 0, ""
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.beat = threading.Thread(target=self._heartbeat, daemon=True)

    def __enter__(self) -> CellProgress:
        self.beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.beat.join()
        if self.partial.strip():
            self._line(f"| {self.partial.rstrip()}")

    def _line(self, text: str) -> None:
        with self.lock:
            now = time.perf_counter()
            self.last_line = now
            self.log(f"{self.label} cell {self.cell}/{self.n_cells} "
                     f"({clock(now - self.started)}) {text}".rstrip())

    def cell_started(self, cell) -> None:
        """A code cell starts (markdown cells are not counted)."""
        if cell.cell_type != "code":
            return
        self.cell += 1
        first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
        self._line(first[:90] + ("..." if len(first) > 90 else ""))

    def write(self, text: str) -> None:
        """The notebook's stdout: relayed line by line, indented under its cell."""
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if line.strip():
                self._line(f"| {line.rstrip()}")

    def flush(self) -> None:
        pass

    def _heartbeat(self) -> None:
        while not self.stopped.wait(min(self.heartbeat_s, 5.0)):
            if time.perf_counter() - self.last_line >= self.heartbeat_s:
                self._line("... still running")


class ProgressEngine(NBClientEngine):
    """papermill's nbclient engine, also reporting each cell start to ``progress``."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, progress: CellProgress | None = None,
                                 **kwargs):
        if progress is not None:
            start = nb_man.cell_start

            def cell_start(cell, cell_index=None, **kw):
                start(cell, cell_index, **kw)
                progress.cell_started(cell)

            nb_man.cell_start = cell_start
            kwargs["stdout_file"] = progress
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register(ENGINE, ProgressEngine)


def estimate(cfg: Profile, chosen: list[Path]) -> str:
    """Expected wall time per notebook from the last recorded run (or that none is)."""
    times = read_stage_times(cfg)
    known = {nb.name: times[nb.name] for nb in chosen if nb.name in times}
    if not known:
        return f"[{cfg.name}] no recorded stage times yet: no estimate"
    parts = [f"{nb.stem} {clock(known[nb.name]) if nb.name in known else '?'}" for nb in chosen]
    return (f"[{cfg.name}] estimate from the last run: {', '.join(parts)}; "
            f"total about {clock(sum(known.values()))}")


def summary(cfg: Profile) -> list[str]:
    """Where the outputs are and the headline table (if there are results)."""
    figures, tables = output_dirs(cfg)
    lines = [f"[{cfg.name}] executed notebooks: {notebooks_dir(cfg)}",
             f"[{cfg.name}] tables and numbers: {tables}", f"[{cfg.name}] figures: {figures}"]
    tidy = read_results(cfg)
    if len(tidy):
        main = main_table(per_sae(tidy))
        lines += ["", labelled(main[[c for c in HEADLINE if c in main]]).to_string()]
    return lines


def _print_now(line: str) -> None:
    """Print and flush: progress must show at once even when stdout is a file."""
    print(line, flush=True)


def run(cfg: Profile, profile: str, overrides: dict | None = None,
        only: list[str] | None = None, timeout: int | None = None,
        log=None) -> list[StageResult]:
    """Execute the notebooks for ``cfg``, the profile ``load_profile(profile,
    overrides)`` gave the caller (the notebooks load it from ``profile`` and
    ``overrides``), showing progress (module docstring); returns per-stage wall
    times (also recorded for the next run's estimate). ``timeout``: seconds per
    cell, none by default (notebook 02 trains every SAE in one cell: hours on the
    cpu profile)."""
    overrides = overrides or {}
    log = log or _print_now
    check_dtypes(cfg)  # fails here, before any work, when it asks for emulated bfloat16
    check_cache_request(cfg)  # and here for an unusable model or a layer beyond its depth
    log(f"[{cfg.name}] {describe_dtypes(cfg)}")
    results = []
    # first: this profile's notebook 05 reads their results
    for name, companion in zip(cfg.companions, companion_profiles(cfg)):
        log(f"[{cfg.name}] companion profile {name!r} first (without overrides)")
        results += run(companion, name, only=only, timeout=timeout, log=log)
    out_dir = notebooks_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = notebooks(only)
    log(estimate(cfg, chosen))
    for nb in chosen:
        out = out_dir / nb.name
        n_cells = sum(c.cell_type == "code"  # + the injected parameters cell
                      for c in nbformat.read(nb, as_version=4).cells) + 1
        log(f"[{cfg.name}] {nb.name} ...")
        t0 = time.perf_counter()
        try:
            with CellProgress(f"[{cfg.name}] {nb.stem}", n_cells, log) as progress:
                pm.execute_notebook(
                    str(nb), str(out), parameters={"profile": profile, "overrides": overrides},
                    cwd=str(NOTEBOOK_DIR), execution_timeout=timeout, progress_bar=False,
                    log_output=False, engine_name=ENGINE, progress=progress,
                )
        except PapermillExecutionError as exc:
            raise PipelineError(
                f"{nb.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); "
                f"partial copy: {out}"
            ) from None
        seconds = time.perf_counter() - t0
        record_stage_time(cfg, nb.name, seconds)
        if not cfg.smoke:
            publish(out, EXECUTED_DIR / cfg.name / nb.name)
        log(f"[{cfg.name}] {nb.name} done in {clock(seconds)}")
        results.append(StageResult(nb.name, out, seconds))
    for line in summary(cfg):
        log(line)
    return results


# Machine-specific text in outputs -> a placeholder (longest first).
def _machine_paths() -> list[tuple[str, str]]:
    return [(str(REPO_ROOT), "<repo>"), (str(Path.home()), "~")]


def _clean_text(text: str) -> str:
    for path, placeholder in _machine_paths():
        text = text.replace(path, placeholder)
    return text


def publish(executed: Path, target: Path) -> bool:
    """Write a reader's copy of an executed notebook to ``target``: outputs kept
    (figures inline), stderr and progress widgets (bars, warnings) and execution
    timings dropped, machine paths replaced. Returns whether ``target`` changed."""
    nb = nbformat.read(executed, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                continue
            if WIDGET in out.get("data", {}):  # progress-bar widgets: no state to show
                continue
            if out.output_type == "stream":
                out.text = _clean_text(out.text)
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in out.get("data", {}):
                    out.data[mime] = _clean_text(out.data[mime])
            kept.append(out)
        cell.outputs = kept
    text = nbformat.writes(nb) + "\n"
    if target.exists() and target.read_text() == text:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return True


CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def refresh_references(only: list[str] | None = None, timeout: int = 1800,
                       log=print) -> list[Path]:
    """Re-execute the notebooks on the smoke profile and store, in the committed
    notebooks, the outputs of ``# NBVAL_CHECK_OUTPUT`` cells only (every other
    output is cleared): the references that ``pytest --nbval-lax`` compares."""
    results = run(load_profile("smoke"), "smoke", only=only, timeout=timeout, log=log)
    changed = []
    for stage in results:
        source = NOTEBOOK_DIR / stage.notebook
        nb = nbformat.read(source, as_version=4)
        executed = [c for c in nbformat.read(stage.output, as_version=4).cells
                    if "injected-parameters" not in c.metadata.get("tags", [])]
        if len(executed) != len(nb.cells):
            raise PipelineError(f"{stage.notebook}: executed copy has {len(executed)} cells, "
                                f"the notebook {len(nb.cells)}")
        count = 0
        for cell, done in zip(nb.cells, executed):
            if cell.cell_type != "code":
                continue
            keep = cell.source.lstrip().startswith(CHECK_MARK)
            cell.outputs = [o for o in done.outputs if o.output_type == "stream"] if keep else []
            count += keep  # nbval reads a reference cell without a count as never run
            cell.execution_count = count if keep else None
            cell.metadata.pop("execution", None)
        before = source.read_text()
        nbformat.write(nb, source)
        if source.read_text() != before:
            changed.append(source)
    return changed
