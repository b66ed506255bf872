"""`unsupjax train idec`: see `unsupjax.tasks.deep_clustering`."""

from unsupjax.tasks.deep_clustering import make_task

_task = make_task("idec")
HELP, add_arguments, run = _task.HELP, _task.add_arguments, _task.run
