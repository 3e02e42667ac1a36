"""Fine-tuning: the loop and its strategies (``loop``), freezing and learning-rate schedules
(``schedule``), and the linear probe's cached backbone features (``features``).

    from edgetl.training import finetune      # also edgetl.finetune / edgetl.FinetuneConfig
"""
from .loop import RunResult, finetune

__all__ = ["finetune", "RunResult"]
