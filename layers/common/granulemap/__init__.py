"""granulemap: scientific reductions over NASA Earthdata granules with a Step Functions Distributed Map.

This package is the shared code of the four Lambdas (it is their layer) and of the local CLI.
Nothing in it knows about Lambda except the thin handlers in functions/*/app.py.
"""

__version__ = "0.1.0"
