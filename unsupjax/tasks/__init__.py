"""One module per command: a Task (for `unsupjax train MODEL`) or a Command.

`base.py` holds the contract and the one driver (`base.train`); `watch.py`
what a run shows while it trains.
"""
