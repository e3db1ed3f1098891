"""Defaults of materializing that the command line shows in --help without importing the engine."""

# averaged models one array task makes (`--averages-per-job`); the task builds the model and
# tokenizes the evaluation sets once for all of them
AVERAGES_PER_JOB = 16
