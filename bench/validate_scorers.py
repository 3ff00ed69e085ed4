"""Validate the SelfCheck sentence scorers against WikiBio human labels (AUC-PR, as SelfCheckGPT reports).

    python bench/validate_scorers.py --data ../shared/data/wikibio/dev.jsonl [--nli-model DIR] [--out FILE]

Each labelled sentence is scored with its passage's real Wikipedia paragraph as the single evidence passage.
Offline scorers (ngram, embedding) always run; nli runs only with --nli-model (a local MNLI classifier).
Then every offline signal of edgeready/selfcheck/signals.py alone and their combination (a logistic regression,
cross-validated with folds grouped by passage): AUC-PR, Brier score and expected calibration error of the
cross-validated probability that a sentence is not factual, and each fold's figures (--no-signals skips it).
Prints markdown tables and writes them, with runtimes and provenance, as JSON under reports/.

--write-calibration FILE fits the combination on every labelled sentence and writes it, with its provenance
(the data's digest, counts, date and the cross-validated figures), as the calibrated scorer's file:
`make calibrate` writes the shipped one, edgeready/selfcheck/calibration.json. The calibrated scorer is left
out of the first table when its file was fitted on the same data (its figures there would be in-sample: the
cross-validated combination row is the honest one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Runnable as a plain script from a checkout, without installing the package.
sys.path.insert(0, str(REPO))

from edgeready.errors import DatasetError  # noqa: E402
from edgeready.selfcheck import ScorerUnavailable, make_scorer  # noqa: E402
from edgeready.selfcheck.signals import SignalExtractor  # noqa: E402
from edgeready.selfcheck.validation import (  # noqa: E402
    auc_pr_table,
    load_labelled,
    markdown_table,
    score_passages,
    signal_report,
    signal_table,
)

DEFAULT_DATA = REPO / ".." / "shared" / "data" / "wikibio" / "dev.jsonl"
DEFAULT_OUT = REPO / "reports" / "selfcheck_validation.json"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.machine()}"
    return f"{system}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def parse_spec(spec: str) -> tuple[str, dict[str, object]]:
    """'ngram:n=2:reduce=avg' -> ('ngram', {'n': 2, 'reduce': 'avg'}); numbers become int or float."""
    name, *pairs = spec.strip().split(":")
    options: dict[str, object] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        value: object = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        options[key.strip()] = value
    return name.strip(), options


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled jsonl (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default: %(default)s)")
    ap.add_argument(
        "--scorers",
        default="ngram,embedding,calibrated",
        help="comma-separated scorers, each NAME or NAME:opt=value:opt=value (e.g. ngram:reduce=avg:n=2)",
    )
    ap.add_argument("--nli-model", default=None, help="local MNLI classifier directory or cached hub id")
    ap.add_argument("--nli-batch-size", type=int, default=8)
    ap.add_argument(
        "--nli-labels",
        default=None,
        help="label order for a config without names, e.g. entailment=0,contradiction=1",
    )
    ap.add_argument("--limit", type=int, default=None, help="score only the first N passages")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for embedding/nli")
    ap.add_argument("--no-signals", action="store_true", help="skip the signals and their combination")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds, grouped by passage")
    ap.add_argument("--samples-from", default=None, metavar="CANDIDATE",
                    help="signals against passages this candidate writes about each person (the gate's evidence) "
                         "instead of the Wikipedia paragraph")
    ap.add_argument("--samples", type=int, default=4, help="passages per person with --samples-from")
    ap.add_argument("--write-calibration", type=Path, default=None, metavar="FILE",
                    help="fit the combination on all the data and write it as a calibrated scorer's file")
    args = ap.parse_args(argv)
    if args.write_calibration and (args.no_signals or args.samples_from or args.limit):
        ap.error("--write-calibration fits on every passage with the reference as evidence: "
                 "drop --no-signals, --samples-from and --limit")

    try:
        passages = load_labelled(args.data)[: args.limit]
    except (OSError, DatasetError) as exc:  # a clear line naming the file and line, not a traceback
        ap.error(str(exc))
    torch_opts: dict[str, object] = {"threads": args.threads} if args.threads else {}
    specs = [parse_spec(n) for n in args.scorers.split(",") if n.strip()]
    specs = [(n, {**opts, **torch_opts} if n in ("embedding", "nli", "calibrated") else opts) for n, opts in specs]
    digest = sha256_of(args.data)
    in_sample = [n for n, opts in specs if n == "calibrated" and calibration_digest(opts) == digest]
    for name in in_sample:
        print(f"{name}: left out: its calibration was fitted on {args.data} (see the combination row)",
              file=sys.stderr)
    specs = [(n, opts) for n, opts in specs if n not in in_sample]
    if args.nli_model:
        nli_opts: dict[str, object] = {
            "model": args.nli_model,
            "batch_size": args.nli_batch_size,
            **torch_opts,
        }
        if args.nli_labels:
            pairs = (item.split("=") for item in args.nli_labels.split(","))
            nli_opts["labels"] = {k.strip(): int(v) for k, v in pairs}
        specs.append(("nli", nli_opts))

    results: dict[str, dict[str, dict[str, float]]] = {}
    runtimes: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name, options in specs:
        try:
            scorer = make_scorer(name, **options)
            scores, labels, seconds = score_passages(scorer, passages)
        except ScorerUnavailable as exc:
            errors[name] = str(exc)
            print(f"{name}: unavailable: {exc}", file=sys.stderr)
            continue
        results[scorer.name] = auc_pr_table(scores, labels)
        runtimes[scorer.name] = seconds
        print(f"{scorer.name}: {len(scores)} sentences in {seconds:.1f} s", file=sys.stderr)

    table = markdown_table(results)
    print(table)
    evidence = model_passages(passages, args.samples_from, args.samples) if args.samples_from else None
    signals, signal_data = (None, None)
    if not args.no_signals:
        signals, signal_data = run_signals(passages, args.folds, args.threads, evidence, digest)
    if args.write_calibration:
        write_fit(args.write_calibration, signal_data, signals, args.data, digest, passages)
    if signals is not None and evidence is not None:
        signals["evidence"] = f"{args.samples} passages by {args.samples_from} per person (the gate's protocol)"
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "data": str(args.data),
        "passages": len(passages),
        "sentences": sum(len(p.sentences) for p in passages),
        "evidence": "wiki_bio_text (one reference passage per generated passage)",
        "results": results,
        "runtime_s": runtimes,
        "torch_threads": args.threads,
        "errors": errors,
        "markdown": table,
        "signals": signals,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if errors else 0


def model_passages(passages: list, candidate: str, n: int) -> dict[int, list[str]]:
    """n passages per person from `candidate`, sampled as the hallucination gate samples (its prompt, temperature
    1, a seed per sample), 16 decoded at once."""
    from edgeready.adapters.llama_cpp_device import LlamaCppDevice
    from edgeready.candidates import materialize, resolve_candidate
    from edgeready.gates.hallucination import PROMPT, clean_passage
    from edgeready.records import GenerationRequest

    cand = resolve_candidate(candidate, REPO / "candidates")
    model = materialize(cand, REPO / ".cache")
    device = LlamaCppDevice(model.path, threads=2, n_ctx=4096, name=cand.name, prompt_style=cand.prompt_style,
                            parallel=16)
    people = [p.concept.replace("-lrb-", "(").replace("-rrb-", ")").replace(" ( ", " (").replace(" )", ")")
              for p in passages]
    requests = [GenerationRequest(prompt=PROMPT.format(concept=who), max_tokens=80, temperature=1.0, seed=k)
                for who in people for k in range(n)]
    start = time.perf_counter()
    texts = [clean_passage(r.text) for r in device.generate(requests)]
    print(f"{len(texts)} passages by {cand.name} in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    device.close()
    return {p.passage_idx: texts[i * n:(i + 1) * n] for i, p in enumerate(passages)}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def calibration_digest(options: dict[str, object]) -> str | None:
    """The sha256 of the data the calibrated scorer's file was fitted on (None when it does not say)."""
    from edgeready.selfcheck.calibrated import DEFAULT_CALIBRATION, load_calibration

    _, provenance = load_calibration(Path(str(options.get("calibration", DEFAULT_CALIBRATION))))
    return provenance.get("data_sha256")


def write_fit(out: Path, table, signals: dict, data: Path, digest: str, passages: list) -> None:
    """Fit the combination on every sentence and write it with its provenance."""
    import sklearn

    from edgeready.selfcheck.calibrated import write_calibration
    from edgeready.selfcheck.signals import COMBINED, Combination

    combination = Combination().fit(table.x, table.nonfactual)
    cv = signals["rows"]["combination"]
    counts = {label: table.labels.count(label) for label in sorted(set(table.labels))}
    write_calibration(out, combination.calibration(), {
        "fitted": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": data.name, "data_sha256": digest, "passages": len(passages), "sentences": len(table.labels),
        "labels": counts, "positive": "minor_inaccurate or major_inaccurate (not factual)",
        "evidence": "wiki_bio_text (the real Wikipedia paragraph, one reference passage)",
        "model": f"StandardScaler + LogisticRegression(C={Combination.c}), scikit-learn {sklearn.__version__}",
        "columns": list(COMBINED),
        "cross_validated": {"folds": signals["folds"], "grouped_by": "passage",
                            **{task: round(100 * cv["auc_pr"][task]["auc_pr"], 2) for task in cv["auc_pr"]},
                            "brier": round(cv["brier"], 4), "ece": round(cv["ece"], 4)},
        "made_by": "make calibrate (bench/validate_scorers.py --write-calibration)",
    })
    print(f"wrote {out} (fitted on {len(table.labels)} sentences of {data.name})", file=sys.stderr)


def run_signals(passages: list, folds: int, threads: int | None, evidence: dict[int, list[str]] | None,
                digest: str) -> tuple[dict, object]:
    """Signals alone and combined, cross-validated by passage; prints their table. Returns it and the signals."""
    from edgeready.selfcheck.embedding import EmbeddingScorer

    extractor = SignalExtractor(EmbeddingScorer(threads=threads))
    extractor.embedding.load()  # the model's load is not scoring time
    table = signal_table(extractor, passages, evidence)
    rows = signal_report(table, folds)
    shipped = shipped_calibration(table, digest, evidence is None)
    print(f"\nsignals: {len(table.labels)} sentences scored in {table.seconds:.1f} s "
          f"({folds} folds grouped by passage)", file=sys.stderr)
    print("\n| signal | NonFact | NonFact* | Factual | Brier | ECE | NonFact per fold |\n|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        auc = row["auc_pr"]
        per_fold = ", ".join(f"{100 * f['auc_pr_nonfact']:.1f}" for f in row["folds"])
        print(f"| {name} | {100 * auc['NonFact']['auc_pr']:.2f} | {100 * auc['NonFact*']['auc_pr']:.2f} | "
              f"{100 * auc['Factual']['auc_pr']:.2f} | {row['brier']:.4f} | {row['ece']:.4f} | {per_fold} |")
    if shipped is not None:
        auc = shipped["auc_pr"]
        print(f"\nshipped calibration applied as it is: NonFact {100 * auc['NonFact']['auc_pr']:.2f}, NonFact* "
              f"{100 * auc['NonFact*']['auc_pr']:.2f}, Factual {100 * auc['Factual']['auc_pr']:.2f}, Brier "
              f"{shipped['brier']:.4f}, ECE {shipped['ece']:.4f}; mean probability {shipped['mean_probability']:.3f} "
              f"against an observed share of {shipped['observed_share']:.3f} non-factual sentences"
              + (" (in-sample: it was fitted on these sentences)" if shipped["in_sample"] else ""))
    return {"seconds": table.seconds, "sentences": len(table.labels), "folds": folds, "rows": rows,
            "shipped_calibration": shipped}, table


def shipped_calibration(table, digest: str, reference: bool) -> dict | None:
    """The shipped calibration's figures on this table (None before `make calibrate` has written it)."""
    from edgeready.selfcheck.calibrated import DEFAULT_CALIBRATION, load_calibration
    from edgeready.selfcheck.validation import calibration_report

    if not DEFAULT_CALIBRATION.exists():
        return None
    calibration, provenance = load_calibration(DEFAULT_CALIBRATION)
    report = calibration_report(table, calibration)
    return {**report, "in_sample": provenance.get("data_sha256") == digest and reference}


if __name__ == "__main__":
    raise SystemExit(main())
