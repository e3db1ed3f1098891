"""The `average` command: streaming (accumulative) weight averaging of safetensors checkpoints."""

from __future__ import annotations

import click

from ofa_eval.common.errors import OfaError


def parse_weights(text: str | None) -> list[float] | None:
    """`0.5,0.25,0.25` -> [0.5, 0.25, 0.25]; None stays None (uniform)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise OfaError(f"--weights takes comma-separated numbers, got {text!r}") from None


def _summary(report, accumulate: bool) -> str:
    gigabytes = report.bytes_read / 1e9
    written = f"{len(report.outputs)} prefix averages in {report.outputs[0].parent}" if accumulate \
        else str(report.output)
    return (f"wrote {written}: {report.n_tensors} tensors, {gigabytes:.2f} GB read "
            f"in {report.seconds:.1f} s ({gigabytes / max(report.seconds, 1e-9):.2f} GB/s)")


@click.command("average")
@click.argument("out", type=click.Path(path_type=str))
@click.argument("inputs", metavar="IN...", nargs=-1, required=True, type=click.Path(exists=True, path_type=str))
@click.option("--weights", metavar="W1,W2,...",
              help="One non-negative weight per input, normalised to sum 1 (default: uniform).")
@click.option("--accumulate", is_flag=True,
              help="Write every running average (prefix k = average of the first k inputs) into the folder OUT "
                   "as prefix-01.safetensors ..., in one pass over the inputs.")
@click.option("--fsync", is_flag=True,
              help="Flush the outputs to disk before moving them into place (slower; survives a power cut).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def average(out, inputs, weights, accumulate, fsync, quiet):
    """Average the weights of fine-tuned checkpoints IN... into OUT.

    Each IN is a .safetensors file or a model folder (model.safetensors, or a sharded
    model.safetensors.index.json). Tensors are streamed chunk by chunk, averaged in float32
    and written in their own dtype; integer tensors must be equal and are copied. OUT appears
    only when complete.

    \b
      ofa-eval average avg.safetensors run1/ run2/ run3/
      ofa-eval average --weights 2,1,1 avg.safetensors a.safetensors b.safetensors c.safetensors
      ofa-eval average --accumulate prefixes/ run1/ run2/ run3/
    """
    from pathlib import Path

    from tqdm import tqdm

    from ofa_eval.weights.averaging import accumulate_with_report, average_checkpoints
    from ofa_eval.weights.safetensors_file import open_checkpoint

    paths = [Path(path) for path in inputs]
    n_tensors = len(open_checkpoint(paths[0]).entries)
    with tqdm(total=n_tensors, unit="tensor", disable=quiet or None, leave=False) as bar:
        advance = lambda name: bar.update(1)  # noqa: E731 - the progress callback
        run = accumulate_with_report if accumulate else average_checkpoints
        report = run(paths, Path(out), parse_weights(weights), progress=advance, fsync=fsync)
    click.echo(_summary(report, accumulate))


COMMANDS = [average]
