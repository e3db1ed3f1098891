"""Import of the paper's released results (ofa-xlt) into the store.

The release comes as the authors published it (pickled pandas DataFrames in `analysis/pickles/`
of their repository, read by `release_pickles`) or as Parquet copies of the same tables. It has,
per task, a `*_zs` file (one row per training run, wide score columns) and a `*_ra` file (one
row per averaged model of the accumulative protocol, with the run ids that were averaged). Its
quirks are handled here and nowhere else: the mangled `ydiqa_` prefix, string sampling seeds and
run counts, and scores stored as fractions for NLI and NER but percent for TyDiQA (the store
always holds percent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ofa_eval.common.errors import OfaError
from ofa_eval.store.parquet import read_parquet
from ofa_eval.common.keys import member_key
from ofa_eval.artifacts.release_pickles import read_pickled_frame
from ofa_eval.store.database import ensure_eval_set, ensure_task, insert_rows, transaction

ORIGIN = "ofa-xlt"
RUN_COLUMNS = ("kind", "model", "lr", "epochs", "bs", "seed", "scheduler", "id")
AVERAGE_COLUMNS = ("weights", "approach", "num_models", "model", "lr", "epochs", "bs", "seed", "scheduler", "ids")
RUN_VARIANTS = {"last": "last", "oracle-source": "src-dev", "avg-ckpt": "ca", "oracle": "trg-dev"}
SOURCE_DEV_COLUMNS = {"validation_last": "last", "validation_oracle-source": "src-dev", "validation_avg-ckpt": "ca"}
TARGET_DEV_COLUMN = "validation_oracle"
RECIPES = {"ralast": "last", "rasrcdev": "src-dev", "raca": "ca"}
METRIC_NAMES = {"acc": "accuracy", "f1": "f1", "exact_match": "exact_match"}
DATASET_ALIASES = {"ydiqa": "tydiqa"}

DRAW_COLUMNS = ("task", "model", "draw", "recipe", "position", "run_id")


@dataclass(frozen=True)
class ReleaseTask:
    task: str
    runs_name: str  # file name without its suffix (.parquet or .pkl)
    averages_name: str
    metric: str
    source_dataset: str
    target_datasets: tuple[str, ...]
    fractions: bool  # scores stored as 0-1 rather than percent


RELEASE_TASKS = (
    ReleaseTask("nli", "nli_zs", "nli_ra", "accuracy", "xnli", ("xnli", "indicxnli"), True),
    ReleaseTask("tydiqa", "tydiqa_zs", "tyqa_ra", "f1", "tydiqa", ("tydiqa",), False),
    ReleaseTask("ner", "ner_zs", "ner_ra", "f1", "wikiann",
                ("wikiann", "masakhaner", "masakhaner2"), True),
)


@dataclass
class ImportSummary:
    task: str
    runs_added: int
    averages_added: int
    scores_added: int
    draws_added: int


def recipe_name(release_weights: str) -> str:
    """'ralast' -> 'last', 'ratop5' -> 'soup-top5'."""
    if release_weights in RECIPES:
        return RECIPES[release_weights]
    if release_weights.startswith("ratop") and release_weights[5:].isdigit():
        return f"soup-top{release_weights[5:]}"
    raise ValueError(f"unknown averaging weights {release_weights!r}")


def parse_score_column(name: str, with_variant: bool):
    """'xnli_de_acc_oracle-source' -> ('xnli', 'de', 'accuracy', 'src-dev').

    Returns None for columns that are not scores. Datasets without a language part
    (`jampatois_acc`) use the dataset name as language.
    """
    variant = None
    if with_variant:
        if "_" not in name:
            return None
        name, raw_variant = name.rsplit("_", 1)
        if raw_variant not in RUN_VARIANTS:
            return None
        variant = RUN_VARIANTS[raw_variant]
    for raw_metric, metric in METRIC_NAMES.items():
        if name.endswith("_" + raw_metric):
            parts = name[: -len(raw_metric) - 1].split("_")
            dataset = DATASET_ALIASES.get(parts[0], parts[0])
            language = "_".join(parts[1:]) or dataset
            return dataset, language, metric, variant
    return None


def _scale(frame: pl.DataFrame, columns: list[str], spec: ReleaseTask, path: Path) -> pl.DataFrame:
    top = frame.select(pl.max_horizontal(pl.col(columns).max())).item() if columns else 0
    if spec.fractions and top is not None and top > 1.0:
        raise OfaError(f"{path}: expected scores as fractions (0-1) but found {top}")
    if spec.fractions:
        return frame.with_columns(pl.col(columns) * 100.0)
    return frame


def _role(spec: ReleaseTask, dataset: str, language: str) -> str:
    if dataset == spec.source_dataset and language == "en":
        return "source"
    if dataset in spec.target_datasets and language != "en":
        return "target"
    return "extra"


class _Importer:
    """Imports one task's pair of files inside the caller's transaction."""

    def __init__(self, con, spec: ReleaseTask, directory: Path, suffix: str):
        self.con, self.spec = con, spec
        self.runs_path = directory / (spec.runs_name + suffix)
        self.averages_path = directory / (spec.averages_name + suffix)
        self.eval_sets: dict[tuple[str, str, str], int] = {}

    def eval_set(self, dataset: str, language: str, split: str) -> int:
        key = (dataset, language, split)
        if key not in self.eval_sets:
            role = _role(self.spec, dataset, language)
            self.eval_sets[key] = ensure_eval_set(self.con, self.spec.task, dataset, language, split, role)
        return self.eval_sets[key]

    def run(self) -> ImportSummary:
        ensure_task(self.con, self.spec.task, self.spec.metric)
        runs = _read_table(self.runs_path, RUN_COLUMNS + tuple(SOURCE_DEV_COLUMNS) + (TARGET_DEV_COLUMN,))
        averages = _read_table(self.averages_path, AVERAGE_COLUMNS)
        new_run_ids, run_ids = self.insert_runs(runs, self.runs_path)
        scores = self.insert_run_scores(runs.filter(pl.col("id").is_in(list(new_run_ids))), self.runs_path)
        averages_added, average_scores = self.insert_averages(averages, run_ids, self.averages_path)
        draws = self.insert_draws(averages, run_ids, self.averages_path)
        return ImportSummary(self.spec.task, len(new_run_ids), averages_added, scores + average_scores, draws)

    def insert_runs(self, runs: pl.DataFrame, path: Path):
        if runs["id"].is_duplicated().any():
            raise OfaError(f"{path}: duplicate run ids")
        existing = dict(self.con.execute(
            "SELECT external_id, run_id FROM run_table WHERE task = ? AND origin = ?", [self.spec.task, ORIGIN]
        ).fetchall())
        new = runs.filter(~pl.col("id").is_in(list(existing)))
        try:
            rows = new.select(
                pl.lit(self.spec.task).alias("task"), pl.col("model"), pl.col("lr").cast(pl.Float64),
                pl.col("bs").cast(pl.Int32), pl.col("seed").cast(pl.Int64), pl.col("epochs").cast(pl.Int32),
                pl.col("id"), pl.lit(ORIGIN).alias("origin"),
            )
        except pl.exceptions.PolarsError as error:
            raise OfaError(f"{path}: bad hyperparameter column ({str(error).splitlines()[0]})") from None
        self.con.register("new_runs", rows.to_arrow())
        inserted = self.con.execute(
            "INSERT INTO run_table (task, model, learning_rate, batch_size, seed, epochs, external_id, origin) "
            "SELECT * FROM new_runs RETURNING external_id, run_id"
        ).fetchall()
        self.con.unregister("new_runs")
        existing.update(dict(inserted))
        return {external for external, _ in inserted}, existing

    def insert_run_scores(self, runs: pl.DataFrame, path: Path) -> int:
        if runs.is_empty():
            return 0
        parsed = {c: parse_score_column(c, True) for c in runs.columns if c not in RUN_COLUMNS}
        parsed = {c: p for c, p in parsed.items() if p is not None}
        value_columns = list(parsed) + list(SOURCE_DEV_COLUMNS) + [TARGET_DEV_COLUMN]
        runs = _scale(runs, value_columns, self.spec, path)
        long = runs.unpivot(index="id", on=list(parsed) + list(SOURCE_DEV_COLUMNS), variable_name="column")
        keys = []
        for column in long["column"].unique(maintain_order=True).to_list():
            if column in SOURCE_DEV_COLUMNS:
                dataset, language, split, metric, variant = (
                    self.spec.source_dataset, "en", "validation", self.spec.metric, SOURCE_DEV_COLUMNS[column])
            else:
                dataset, language, metric, variant = parsed[column]
                split = "test"
            keys.append((column, self.eval_set(dataset, language, split), metric, variant))
        key_frame = pl.DataFrame(keys, schema=["column", "eval_set_id", "metric", "variant"], orient="row")
        self._insert_scores(long.join(key_frame, on="column"), "run")
        target_dev = runs.select(pl.col("id"), pl.lit("trg-dev").alias("variant"),
                                 pl.lit("target-dev").alias("criterion"), pl.col(TARGET_DEV_COLUMN).alias("value"))
        self._insert_by_external_id("selection_table (run_id, variant, criterion, value)",
                                    "run_id, variant, criterion, value", target_dev)
        return long.height

    def _insert_by_external_id(self, table: str, columns: str, frame: pl.DataFrame) -> None:
        self.con.register("incoming", frame.to_arrow())
        self.con.execute(
            f"INSERT INTO {table} SELECT {columns} FROM incoming i "
            "JOIN run_table r ON r.external_id = i.id AND r.task = ? AND r.origin = ?",
            [self.spec.task, ORIGIN],
        )
        self.con.unregister("incoming")

    def _insert_scores(self, long: pl.DataFrame, subject: str) -> None:
        if long["value"].null_count():
            raise OfaError(f"{self.spec.task}: missing score values in the release")
        if subject == "run":
            self._insert_by_external_id(
                "score_table (run_id, variant, eval_set_id, metric, value)",
                "r.run_id, i.variant, i.eval_set_id, i.metric, i.value", long)
        else:
            self.con.register("incoming", long.to_arrow())
            self.con.execute("INSERT INTO score_table (average_id, eval_set_id, metric, value) "
                             "SELECT average_id, eval_set_id, metric, value FROM incoming")
            self.con.unregister("incoming")

    def insert_averages(self, averages: pl.DataFrame, run_ids: dict, path: Path):
        """Averaged models not yet stored, with their ordered members and scores."""
        averages = self._keyed_averages(averages, run_ids, path)
        parsed = {c: parse_score_column(c, False) for c in averages.columns if c not in AVERAGE_COLUMNS}
        parsed = {c: p for c, p in parsed.items() if p is not None}
        averages = _scale(averages, list(parsed), self.spec, path)
        stored = _frame(self.con.execute(
            "SELECT model, recipe, approach, member_key FROM average_table WHERE task = ?", [self.spec.task]),
            dict.fromkeys(["model", "recipe", "approach", "member_key"], pl.String))
        keys = ["model", "recipe", "approach", "member_key"]
        # a member set drawn twice (two draws sharing their first run) is one model
        averages = averages.unique(subset=keys, keep="first", maintain_order=True)
        fresh = averages.join(stored, on=keys, how="anti")
        if fresh.is_empty():
            return 0, 0
        header = fresh.select(pl.lit(self.spec.task).alias("task"), "model", "recipe", "approach", "member_key",
                              pl.col("num_models").alias("n_members"))
        self.con.register("incoming", header.to_arrow())
        ids = _frame(self.con.execute(
            "INSERT INTO average_table (task, model, recipe, approach, member_key, n_members) "
            "SELECT * FROM incoming RETURNING model, recipe, approach, member_key, average_id"),
            dict.fromkeys(["model", "recipe", "approach", "member_key"], pl.String) | {"average_id": pl.Int64})
        self.con.unregister("incoming")
        fresh = fresh.join(ids, on=["model", "recipe", "approach", "member_key"])
        members = (fresh.select("average_id", "ids", "num_models").explode("ids")
                   .with_columns(pl.int_range(1, pl.len() + 1).over("average_id").alias("position"),
                                 pl.col("ids").replace_strict(run_ids, return_dtype=pl.Int64).alias("run_id"),
                                 (1.0 / pl.col("num_models")).alias("weight")))
        self.con.register("incoming", members.select("average_id", "position", "run_id", "weight").to_arrow())
        self.con.execute("INSERT INTO average_member_table (average_id, position, run_id, weight) "
                         "SELECT * FROM incoming")
        self.con.unregister("incoming")
        keys = [(c, self.eval_set(d, lang, "test"), m) for c, (d, lang, m, _) in parsed.items()]
        key_frame = pl.DataFrame(keys, schema=["column", "eval_set_id", "metric"], orient="row")
        long = fresh.unpivot(index="average_id", on=list(parsed), variable_name="column").join(key_frame, on="column")
        self._insert_scores(long, "average")
        return fresh.height, long.height

    def _keyed_averages(self, averages: pl.DataFrame, run_ids: dict, path: Path) -> pl.DataFrame:
        """Validated averaged-model rows with their recipe and member key."""
        averages = averages.with_columns(pl.col("num_models").cast(pl.Int32, strict=False))
        if averages["num_models"].null_count():
            raise OfaError(f"{path}: non-numeric num_models")
        try:
            recipes = [recipe_name(w) for w in averages["weights"].to_list()]
        except ValueError as error:
            raise OfaError(f"{path}: {error}") from None
        for ids, n in averages.select("ids", "num_models").iter_rows():
            if len(ids) != n or any(i not in run_ids for i in ids):
                raise OfaError(f"{path}: an averaged model (r={n}) lists ids that are not runs of {self.runs_path.name}")
        keys = [member_key(ids) for ids in averages["ids"].to_list()]
        return averages.with_columns(pl.Series("recipe", recipes), pl.Series("member_key", keys))

    def insert_draws(self, averages: pl.DataFrame, run_ids: dict, path: Path) -> int:
        """Each (model, sampling seed)'s run order, checked to be nested across r.

        The order most averaged models of a seed share is recorded for every strategy
        (recipe '*'); a recipe whose models were drawn in another order (the release has a
        few) gets that order recorded under its own name.
        """
        added = 0
        averages = averages.filter(pl.col("approach") == "all")
        for (model, seed), group in averages.group_by(["model", "seed"]):
            orders = {}
            for weights, ids in group.select("weights", "ids").iter_rows():
                orders.setdefault(recipe_name(weights), []).append(list(ids))
            longest = {recipe: _nested_order(lists, path, model, seed) for recipe, lists in orders.items()}
            common = max(longest.values(), key=lambda order: sum(o == order for o in longest.values()))
            recorded = {"*": common} | {recipe: order for recipe, order in longest.items() if order != common}
            for recipe, order in recorded.items():
                added += self._insert_draw(model, str(seed), recipe, order, run_ids)
        return added

    def _insert_draw(self, model, draw, recipe, order, run_ids) -> int:
        exists = self.con.execute("SELECT count(*) FROM draw_table WHERE task=? AND model=? AND draw=? AND recipe=?",
                                  [self.spec.task, model, draw, recipe]).fetchall()[0][0]
        if exists:
            return 0
        insert_rows(self.con, "draw_table", DRAW_COLUMNS,
                    [(self.spec.task, model, draw, recipe, position, run_ids[i]) for position, i in enumerate(order, 1)])
        return 1


def _frame(cursor, schema: dict) -> pl.DataFrame:
    return pl.DataFrame(cursor.fetchall(), schema=schema, orient="row")


def _nested_order(id_lists: list[list[str]], path: Path, model: str, seed: str) -> list[str]:
    longest = max(id_lists, key=len)
    if any(ids != longest[: len(ids)] for ids in id_lists):
        raise OfaError(f"{path}: the id lists of model {model}, seed {seed} are not nested prefixes")
    return longest


def _read_table(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    return read_pickled_frame(path, required) if path.suffix == ".pkl" else read_parquet(path, required)


def release_files(directory: Path) -> tuple[Path, str]:
    """The folder holding the release's six files, and their suffix.

    The Parquet copies where `directory` has any of them; else the authors' pickles in a clone
    of their repository (`analysis/pickles/`) or in `directory` itself.
    """
    names = [name for spec in RELEASE_TASKS for name in (spec.runs_name, spec.averages_name)]
    if any((directory / f"{name}.parquet").exists() for name in names):
        return directory, ".parquet"
    for folder in (directory / "analysis" / "pickles", directory):
        if any((folder / f"{name}.pkl").exists() for name in names):
            return folder, ".pkl"
    raise OfaError(f"{directory / names[0]}.parquet: file not found (nor the authors' pickles, "
                   f"{names[0]}.pkl, here or in analysis/pickles/)")


def import_release(con, directory: Path) -> list[ImportSummary]:
    """Import all six release files in one transaction; the store is unchanged on any error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise OfaError(f"{directory}: not a directory")
    folder, suffix = release_files(directory)
    with transaction(con):
        return [_Importer(con, spec, folder, suffix).run() for spec in RELEASE_TASKS]
