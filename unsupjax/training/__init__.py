"""The training loop and what it needs: compiled steps, evaluation,
checkpoints, the compilation cache.

  fit, FitResult, Action, ActionOutput, TrainingDiverged   (loop)
  Evaluator, evaluate                                     (evaluation)
  Checkpointer, restore_state, checkpoint_epochs,
    CheckpointError                                       (checkpoint)
  make_runner, StepRunner, MODES                          (runner)
  enable_compilation_cache, compile_lowered               (compile)

Does not offer: models (no model is imported here) or data loading.
"""

from unsupjax.training.checkpoint import (CHECKPOINT_DIR, CheckpointError, Checkpointer,
                                          checkpoint_epochs, restore_state)
from unsupjax.training.compile import (CPU_COMPILER_OPTIONS, compile_lowered,
                                       compiler_options, enable_compilation_cache)
from unsupjax.training.evaluation import DEFAULT_EVAL_BATCH, Evaluator, evaluate, make_eval_fn
from unsupjax.training.loop import (METRICS_FILE, Action, ActionOutput, FitResult, fit_model,
                                    TrainingDiverged, fit, read_history, stream_order)
from unsupjax.training.runner import (MODES, StepRunner, choose_mode, make_runner,
                                      make_steps_fn, take)

__all__ = ["Action", "ActionOutput", "CHECKPOINT_DIR", "CPU_COMPILER_OPTIONS",
           "CheckpointError", "Checkpointer", "DEFAULT_EVAL_BATCH", "Evaluator",
           "FitResult", "METRICS_FILE", "fit_model", "MODES", "StepRunner", "TrainingDiverged",
           "checkpoint_epochs", "choose_mode", "compile_lowered", "compiler_options",
           "enable_compilation_cache", "evaluate", "fit", "make_eval_fn", "make_runner",
           "make_steps_fn", "read_history", "restore_state", "stream_order", "take"]
