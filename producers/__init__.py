"""Producers: fine-tune a hyperparameter grid and write one artifact folder per run.

The modules here need torch and transformers, but import them only inside the functions that
use them, so importing `producers` (or its click commands) stays cheap.

- `tasks/`: NLI, extractive QA and NER behind one interface (`producers.tasks.get_task`), each
  the engine's task definition (`ofa_eval.tasks`) plus its training code;
- `data`, `hub`: evaluation and training data from local files or the paper's Hub datasets;
- `synthetic`: the offline quickstart's generated corpus;
- `modeling`, `pretrain`: tokenizers and small models built from a config, pretrained with masked
  language modelling on the user's texts (`ofa-eval build-model`; the quickstart uses it);
- `adopt`: run folders made from Hugging Face `Trainer` output (`ofa-eval adopt`);
- `finetune`: the optimizer, the schedule and the training loop;
- `train`: one run: snapshots, the within-run checkpoint average and resuming;
- `heads`: aligning task heads across runs so that their weights can be averaged;
- `grid`, `launch`: grid files and the local / SLURM launchers;
- `predict`, `artifacts`: predictions, and writing run folders in the format of
  `ofa_eval.artifacts.run_format` (docs/artifacts.md).

`producers` imports `ofa_eval`, never the other way round (only the `ofa-eval` command line
imports both).
"""
