"""The metric registry: every reported metric declared once, with its words.

A metric's id is ``<eval>/<name>``: ``name`` is its key in that eval's result
JSON (``evals.results``), the id its column in ``report.results``' tables.
Evals emit ``Metric.name``; reports, figures, statements and the pipeline read
ids, labels, directions and formats from here, so a metric is renamed or
relabelled in one place. Parametrised families (per-dataset probing, the
stability thresholds, the residual-stream baseline) are built by the functions
below.

Labels: ``label`` is the metric in words (a table row, a figure title);
``short`` its column in plain-text tables; ``tex`` its LaTeX column header;
``axis`` its figure axis. Each falls back to ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower"] | None

# The evals' names: the first part of a metric id, the name of a result file.
CORE, ABSORPTION, PROBING, STABILITY = "core", "absorption", "probing", "stability"
TRAIN = "train"  # not an eval: how far each SAE trained, read from its run (``report.results``)
RAW = "raw"  # absorption's computed measures where not meaningful: ``absorption/raw/<name>``
BASELINE = "baseline"  # probing on the residual stream: ``probing/baseline/<name>``


@dataclass(frozen=True)
class Metric:
    eval: str
    name: str
    label: str
    direction: Direction = None  # which way is better; None: neither (a size, a count)
    fmt: str = ".3f"  # format spec of a value in text
    unit: str = ""
    short: str = ""
    tex: str = ""
    axis: str = ""

    def __post_init__(self) -> None:
        for field in ("short", "tex", "axis"):
            if not getattr(self, field):
                object.__setattr__(self, field, self.label)

    @property
    def id(self) -> str:
        return f"{self.eval}/{self.name}"

    @property
    def raw_id(self) -> str:
        """The id of the metric's computed value kept when it is not meaningful
        (absorption's measures)."""
        return f"{self.eval}/{RAW}/{self.name}"


def eval_of(metric_id: str) -> str:
    """The eval a metric id belongs to (``core/l0`` -> ``core``)."""
    return metric_id.split("/", 1)[0]


# --------------------------------------------------------------------------- core
L0 = Metric(CORE, "l0", "L0", fmt=",.1f", unit="latents per token", tex="$L_0$")
MSE = Metric(CORE, "mse", "MSE", "lower")
MSE_PER_ELEMENT = Metric(CORE, "mse_per_element", "MSE (per element)", "lower")
COSINE = Metric(CORE, "cosine_similarity", "cosine", "higher", tex="cos.")
EXPLAINED_VARIANCE = Metric(CORE, "explained_variance", "explained variance", "higher",
                            short="explained var.", tex="expl.\\ var.")
FRAC_DEAD = Metric(CORE, "frac_dead", "dead", "lower", fmt=".0%")
FRAC_DENSE = Metric(CORE, "frac_dense", "dense", "lower", fmt=".0%")
CE_LOSS_SCORE = Metric(CORE, "ce_loss_score", "CE-loss score", "higher",
                       short="CE loss score", tex="CE score")
DELTA_CE = Metric(CORE, "delta_ce", "CE increase", "lower", unit="nats")
KL_DIV = Metric(CORE, "kl_div", "KL divergence", "lower", unit="nats")

# --------------------------------------------------------------------------- absorption
FULL_ABSORPTION = Metric(ABSORPTION, "mean_full_absorption", "full absorption", "lower",
                         tex="full abs.", axis="full absorption rate")
ABSORPTION_FRACTION = Metric(ABSORPTION, "mean_absorption_fraction", "absorption fraction",
                             "lower", short="absorption frac.", tex="abs.\\ frac.")
FULL_ABSORPTION_STD = Metric(ABSORPTION, "std_full_absorption", "full absorption, s.d. "
                             "over letters")
ABSORPTION_FRACTION_STD = Metric(ABSORPTION, "std_absorption_fraction", "absorption "
                                 "fraction, s.d. over letters")
MAIN_LATENTS = Metric(ABSORPTION, "mean_n_main_latents", "main latents per letter")
LETTERS_KEPT = Metric(ABSORPTION, "n_letters_kept", "letters kept", fmt=".0f", tex="letters")
LETTERS_SCORED = Metric(ABSORPTION, "n_letters_scored", "letters scored", fmt=".0f")
MEAN_K1_F1 = Metric(ABSORPTION, "mean_k1_f1", "mean k=1 F1", "higher", tex="mean $F_1$")
MAX_K1_F1 = Metric(ABSORPTION, "max_k1_f1", "best k=1 F1", "higher", tex="best $F_1$",
                   axis="best letter latent F1")
LETTER_LATENTS = Metric(ABSORPTION, "n_letter_latents", "letter latents", "higher", fmt=".1f")
WRONG_LETTER_FIRES = Metric(ABSORPTION, "wrong_letter_fire_rate", "fires on other letters",
                            "lower", tex="other letters")
MEANINGFUL = Metric(ABSORPTION, "meaningful", "meaningful", fmt=".0%")
# the four measures that are NaN where the metric is not meaningful (``absorption.health``)
ABSORPTION_MEASURES = (FULL_ABSORPTION, FULL_ABSORPTION_STD, ABSORPTION_FRACTION,
                       ABSORPTION_FRACTION_STD)
ABSORPTION_HEALTH = (MEAN_K1_F1, MAX_K1_F1, LETTER_LATENTS, WRONG_LETTER_FIRES)


# --------------------------------------------------------------------------- probing
def probing_mean(subset: str) -> Metric:
    """Accuracy over datasets with latents ``subset`` (``top<k>`` or ``all``)."""
    return Metric(PROBING, f"mean_{subset}", f"probing {subset.replace('top', 'top-')}",
                  "higher")


def probing_dataset(dataset: str, subset: str = "top1") -> Metric:
    """Accuracy on one dataset's tasks with latents ``subset``."""
    return Metric(PROBING, f"{dataset}/{subset}",
                  f"{dataset} {subset.replace('top', 'top-')}", "higher", tex=dataset)


def baseline(metric: Metric) -> Metric:
    """A probing metric measured on the residual stream instead of the latents."""
    return Metric(metric.eval, f"{BASELINE}/{metric.name}", f"{metric.label} (residual)",
                  metric.direction, metric.fmt, metric.unit)


def is_probing_dataset(metric_id: str, subset: str = "top1") -> bool:
    """Whether ``metric_id`` is a per-dataset probing accuracy (``probing_dataset``)."""
    parts = metric_id.split("/")
    return len(parts) == 3 and parts[0] == PROBING and parts[1] != BASELINE \
        and parts[2] == subset


PROBING_TOP1 = probing_mean("top1")
PROBING_TOP1_SE = Metric(PROBING, "mean_top1_se", "probing top-1, s.e.")
# the probing rule (``evals.probing.task_counts``): how many tasks enter the means
PROBING_TASKS_COUNTED = Metric(PROBING, "n_tasks_counted", "probing tasks counted", fmt=".0f")
PROBING_TASKS = Metric(PROBING, "n_tasks", "probing tasks", fmt=".0f")
# texts per task where a dataset's smallest class cannot supply n_train / 2 + n_test / 2
PROBING_TRAIN_MIN = Metric(PROBING, "n_train_min", "probing train texts, fewest", fmt=".0f")
PROBING_TEST_MIN = Metric(PROBING, "n_test_min", "probing test texts, fewest", fmt=".0f")
# the original's "bias detection" and "sentiment" accuracies have these stand-ins
PROBING_GENDER = probing_dataset("gender")
PROBING_SENTIMENT = probing_dataset("sentiment")


# --------------------------------------------------------------------------- stability
def stability_matched(threshold: float, matching: str = "max_cos") -> Metric:
    """The fraction of latents whose match (``max_cos`` or ``assignment``) exceeds
    ``threshold`` (``evals.stability.match_stats``)."""
    return Metric(STABILITY, f"{matching}_frac_above_{threshold:g}", f"matched > {threshold:g}",
                  "higher", tex=f"matched $>{threshold:g}$")


STABILITY_MAX_COS = Metric(STABILITY, "max_cos_mean", "best-match cosine", "higher",
                           short="stability (max cos)", tex="best-match cos.")
# the same statistic for two independent random decoders of the pair's shapes
STABILITY_CHANCE = Metric(STABILITY, "chance_max_cos_mean", "best-match cosine of random decoders",
                          short="chance (max cos)", tex="chance")
STABILITY_ASSIGNMENT = Metric(STABILITY, "assignment_mean", "one-to-one cosine", "higher",
                              tex="one-to-one cos.")
STABILITY_ABOVE_07 = stability_matched(0.7)
STABILITY_ABOVE_09 = stability_matched(0.9)

# --------------------------------------------------------------------------- training
TRAIN_TOKENS = Metric(TRAIN, "tokens", "training tokens", fmt=",.0f")
TRAIN_STEPS = Metric(TRAIN, "steps", "training steps", fmt=",.0f")
TRAIN_BATCH_SIZE = Metric(TRAIN, "batch_size", "batch size (tokens)", fmt=",.0f")
TRAIN_WIDTH = Metric(TRAIN, "width", "latents", fmt=",.0f")
TRAINING = (TRAIN_TOKENS, TRAIN_STEPS, TRAIN_BATCH_SIZE, TRAIN_WIDTH)

METRICS = {m.id: m for m in (
    L0, MSE, MSE_PER_ELEMENT, COSINE, EXPLAINED_VARIANCE, FRAC_DEAD, FRAC_DENSE,
    CE_LOSS_SCORE, DELTA_CE, KL_DIV, *ABSORPTION_MEASURES, MAIN_LATENTS, LETTERS_KEPT,
    LETTERS_SCORED, *ABSORPTION_HEALTH, MEANINGFUL, PROBING_TOP1, PROBING_TOP1_SE,
    baseline(PROBING_TOP1), PROBING_TASKS_COUNTED, PROBING_TASKS, PROBING_TRAIN_MIN,
    PROBING_TEST_MIN, PROBING_GENDER,
    PROBING_SENTIMENT, STABILITY_MAX_COS, STABILITY_CHANCE, STABILITY_ASSIGNMENT,
    STABILITY_ABOVE_07, STABILITY_ABOVE_09, *TRAINING)}


def get(metric_id: str) -> Metric | None:
    """The declared metric of an id, per-dataset probing included; None if undeclared."""
    if metric_id in METRICS:
        return METRICS[metric_id]
    if is_probing_dataset(metric_id):
        return probing_dataset(metric_id.split("/")[1])
    return None
