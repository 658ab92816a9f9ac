"""A suite's metrics mirrored to Weights & Biases, with SAELens's logger settings.

A suite is one run: each entry's stock ``SAETrainer`` keeps ``log_to_wandb`` off (every trainer
would log the same keys into it), and the suite's own records (the JSON lines of
``gemma-scope train``) go to W&B instead, one key per entry and metric: ``<entry>/loss`` at every
logged step, ``<entry>/final_l0``, ``/final_fvu`` and ``/final_dead_fraction`` as it finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["wandb_payload", "with_wandb"]


def wandb_payload(record: dict[str, Any]) -> tuple[dict[str, float], int | None]:
    """(the W&B keys and values of one suite record, its step or None)."""
    if record["event"] == "step":
        values = {f"{name}/loss": loss for name, loss in record["loss"].items()}
        values["suite/tokens_per_s"] = record["tokens_per_s"]
        return values, record["step"]
    if record["event"] == "entry_finished":
        name = record["entry"]
        keys = ("l0", "fvu", "dead_fraction", "training_tokens")
        return {f"{name}/final_{k}": record[k] for k in keys}, None
    raise ValueError(f"unknown suite record event {record['event']!r}; expected step or entry_finished")


def with_wandb(
    cfg: Any, metrics_log: Callable[[dict], None]
) -> tuple[Callable[[dict], None], Callable[[], None]]:
    """(``metrics_log`` that also logs to a new W&B run, the function that finishes the run).

    The run takes ``cfg``'s (a ``SuiteConfig``) ``wandb_project``, ``wandb_entity`` and
    ``run_name``, the fields of SAELens's ``LoggingConfig``, and the suite's settings as config.
    """
    import wandb

    run = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, name=cfg.run_name,
                     config=cfg.to_dict())  # fmt: skip

    def log(record: dict[str, Any]) -> None:
        metrics_log(record)
        values, step = wandb_payload(record)
        if step is None:
            run.log(values)
        else:
            run.log(values, step=step)

    return log, run.finish
