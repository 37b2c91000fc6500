"""``raykd predict`` and ``raykd export``: use a trained student outside raykd.

Both take a student checkpoint (``.safetensors``) or a job directory (its best student on
validation, or ``--student LABEL``); ``predict`` also runs a job's teacher or its ensemble
(``--model teacher:0``, ``--model ensemble``: :mod:`raykd.predict_models`). Bad input ends
with one line on stderr and exit code 2; warnings (values mapped to a fallback level) go
to stderr as ``warning:`` lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from raykd.cli.common import guarded

artifacts_app = typer.Typer()

ModelArg = Annotated[Path, typer.Argument(
    metavar="JOB_OR_CHECKPOINT", help="A job directory, or a student checkpoint (.safetensors).")]
StudentOpt = Annotated[str | None, typer.Option(
    help="In a job directory: the student's label (default: the best on validation).")]


@artifacts_app.command()
def predict(model: ModelArg, data: Annotated[Path, typer.Argument(
                help="A .csv or .parquet table, an .npz of raw rows (array x, optional y: for "
                     "a model trained on an .npz or a built-in dataset), a .parquet file of "
                     "encoded images (for a model trained on images), a folder of images "
                     "(sub-folders named by class count as labels), or, for a text model, a .txt "
                     "file (one text per line) or a .csv/.parquet/.jsonl file with its text "
                     "column(s); for a span (question answering) student, a SQuAD-format .json "
                     "(--out then gets the official predictions JSON).")],
            out: Annotated[Path, typer.Option(help="Where to write the predictions (CSV).")] = Path(
                "predictions.csv"),
            student: StudentOpt = None,
            which: Annotated[str | None, typer.Option(
                "--model", help="In a job directory: student (the best on validation, the "
                "default), student:LABEL, teacher:I (from 0) or ensemble (the teachers' logits "
                "averaged).")] = None) -> None:
    """Predict the class of every row of a table (or every image), with per-class probabilities."""

    def go() -> None:
        from raykd.predict import ArtifactError, predict_file, write_predictions
        from raykd.predict_models import load_model

        if student is not None and which is not None:
            raise ArtifactError("give --student LABEL or --model NAME, not both "
                                "(--student LABEL is --model student:LABEL)")
        if answered_questions(model, data, out, student=student, which=which):
            return
        loaded = load_model(model, model=which if student is None else f"student:{student}")
        result = predict_file(loaded, data)
        for line in result.notes:
            typer.echo(f"note: {line}", err=True)
        for line in result.warnings:
            typer.echo(f"warning: {line}", err=True)
        write_predictions(result, loaded.class_names, out)
        counts = {n: result.names.count(n) for n in loaded.class_names}
        typer.echo(loaded.title)
        typer.echo(f"{len(result.names)} rows -> {out}: " + ", ".join(f"{n} {c}" for n, c in counts.items()))
        if result.accuracy is not None:
            typer.echo(f"accuracy {result.accuracy:.4f} on {result.labelled} labelled rows")

    guarded(go)


def answered_questions(model: Path, data: Path, out: Path, *, student: str | None,
                       which: str | None) -> bool:
    """A span (question answering) student answers a SQuAD-format file: the official
    predictions JSON is written to ``out``; False when ``model`` is no span student."""
    from raykd.predict import find_student
    from raykd.predict_spans import is_span_checkpoint, write_predictions

    if which not in (None, "student") and not str(which).startswith("student:"):
        return False
    label = student or (str(which).partition(":")[2] if which else None) or None
    checkpoint = find_student(model, student=label)[0]
    if not is_span_checkpoint(checkpoint):
        return False
    written = write_predictions(checkpoint, data, out)
    typer.echo(f"span student {checkpoint}: answers to the questions of {data} -> {written}")
    return True


@artifacts_app.command()
def export(model: ModelArg,
           format_: Annotated[Literal["onnx", "safetensors"], typer.Option(
               "--format", help="onnx (raw rows in for an .npz or built-in dataset's student, "
               "the scaling inside; else preprocessed inputs, the record beside it) or "
               "safetensors.")],
           out: Annotated[Path, typer.Option(help="The file to write.")],
           data: Annotated[Path | None, typer.Option(
               help="A .csv/.parquet/.npz file or an image folder (a text model: .txt, .csv, "
                    ".parquet or .jsonl texts) for the ONNX parity check (default: the job's "
                    "test split).")] = None,
           student: StudentOpt = None) -> None:
    """Export a student as ONNX (parity-checked against PyTorch) or self-describing safetensors."""

    def go() -> None:
        from raykd.export import PARITY_TOLERANCE, export_student
        from raykd.predict import load_student

        loaded = load_student(model, student=student)
        files, parity = export_student(loaded, fmt=format_, out=out, data=data)
        typer.echo(f"student {loaded.label} ({loaded.checkpoint}) -> " + ", ".join(map(str, files)))
        if parity is not None:
            verdict = "ok" if parity.ok else f"MISMATCH (tolerance {PARITY_TOLERANCE:g})"
            typer.echo(f"parity on {parity.source}: max abs diff {parity.max_abs_diff:.2e}, "
                       f"argmax agreement {parity.argmax_agreement:.4f}: {verdict}")
            if not parity.ok:
                raise typer.Exit(1)

    guarded(go)
