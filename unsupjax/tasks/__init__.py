"""End-to-end tasks behind the CLI: load data, build a model, fit, report.

One module per command (`ae.py` is `unsupjax train ae`); `common.py` holds
the flags, validation and work-directory handling they share.
"""
