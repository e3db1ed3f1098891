"""Producers: fine-tune a hyperparameter grid and write one artifact folder per run.

The modules here need torch and transformers, but import them only inside the functions that
use them, so importing `producers` (or its click commands) stays cheap.

- `tasks/`: NLI, extractive QA and NER behind one interface (`producers.tasks.get_task`);
- `data`, `hub`: evaluation and training data from local files or the paper's Hub datasets;
- `synthetic`, `modeling`: the offline quickstart's generated corpus, tokenizer and tiny model;
- `train`: the training loop, snapshots, the within-run checkpoint average and resuming;
- `heads`: aligning task heads across runs so that their weights can be averaged;
- `grid`, `launch`: grid files and the local / SLURM launchers;
- `predict`, `artifacts`: predictions and the run folder format (docs/artifacts.md).
"""
