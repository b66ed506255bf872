"""`unsupjax train conv-ae`: convolutional autoencoder."""

from unsupjax.tasks.ae import make_task

_task = make_task("conv-ae", "convolutional autoencoder (stride-2 conv encoder, "
                  "transposed-conv decoder)", "conv", False)
HELP, add_arguments, run, evaluate = _task.HELP, _task.add_arguments, _task.run, _task.evaluate
