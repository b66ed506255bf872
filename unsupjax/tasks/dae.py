"""`unsupjax train dae`: denoising (dense) autoencoder."""

from unsupjax.tasks.ae import make_task

_task = make_task("dae", "denoising autoencoder (dense; Gaussian, masking or "
                  "salt-and-pepper corruption drawn from the step's key)", "dense", True)
HELP, add_arguments, run, evaluate = _task.HELP, _task.add_arguments, _task.run, _task.evaluate
