"""Click commands, one module per command family.

Each module imports only click at import time and pulls in its implementation inside the
command body, so `ofa-eval --help` and the statistics commands start fast.
"""
