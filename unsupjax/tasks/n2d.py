"""`unsupjax train n2d`: see `unsupjax.tasks.deep_clustering`."""

from unsupjax.tasks.deep_clustering import make_task

_task = make_task("n2d")
HELP, add_arguments, run = _task.HELP, _task.add_arguments, _task.run
