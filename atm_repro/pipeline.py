"""Batch reproduction: run the numbered notebooks in order with papermill.

Executed copies go to ``runs/<profile>/notebooks/``. A failing notebook stops
the chain with ``PipelineError`` naming the notebook, the failing cell and
the saved partial copy. The profile and overrides are validated before any
notebook starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from atm_repro.config import REPO_ROOT
from atm_repro.profiles import load_profile
from atm_repro.runs import notebooks_dir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


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


def run(profile: str, overrides: dict | None = None, only: list[str] | None = None,
        timeout: int = 3600, log=print) -> list[StageResult]:
    """Execute the notebooks for ``profile``; returns per-stage wall times."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    overrides = overrides or {}
    cfg = load_profile(profile, overrides)  # fails here, before any work, on bad input
    out_dir = notebooks_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for nb in notebooks(only):
        out = out_dir / nb.name
        log(f"[{cfg.name}] {nb.name} ...")
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb), str(out), parameters={"profile": profile, "overrides": overrides},
                cwd=str(NOTEBOOK_DIR), execution_timeout=timeout, progress_bar=False,
                log_output=False,
            )
        except PapermillExecutionError as exc:
            raise PipelineError(
                f"{nb.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); "
                f"partial copy: {out}"
            ) from None
        seconds = time.perf_counter() - t0
        log(f"[{cfg.name}] {nb.name} done in {seconds:.0f} s")
        results.append(StageResult(nb.name, out, seconds))
    return results


CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def refresh_references(only: list[str] | None = None, timeout: int = 1800,
                       log=print) -> list[Path]:
    """Re-execute the notebooks on the smoke profile and store, in the committed
    notebooks, the outputs of ``# NBVAL_CHECK_OUTPUT`` cells only (every other
    output is cleared): the references that ``pytest --nbval-lax`` compares."""
    import nbformat

    results = run("smoke", only=only, timeout=timeout, log=log)
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
