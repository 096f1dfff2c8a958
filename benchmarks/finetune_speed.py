"""Speed of `smose finetune` (SAC under fixed distilled trees) against training with the neural router, interleaved.

    python benchmarks/finetune_speed.py --repeats 3 --out benchmarks/results/finetune-speed

One source run is prepared once: Hopper-v5, ``--source-steps`` steps (learning from ``--learning-starts``), its final
checkpoint, depth-3 per-expert trees (`smose distill`). Then three contenders continue that checkpoint, each in a fresh
subprocess with one compute thread on a copy of the run:

- ``finetune fused``: `smose finetune` with the fused update (hand-written passes; the default);
- ``finetune autograd``: `smose finetune --update autograd` (the reference update);
- ``train --resume fused``: the same checkpoint continued with its neural router, as `smose train --resume`.

Each times ``--measure`` learning steps after ``--warm`` ones (wall clock and CPU time of the process). The contenders
alternate within every repeat and their order rotates between repeats, so that machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from record import header, write
from smose.errors import SmoseError
from smose_cli import run_smose

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("finetune fused", "finetune autograd", "train --resume fused")

WORKER = """
import json, sys, time
import torch
from pathlib import Path
from smose.training.checkpoint import read_checkpoint_json
from smose.training.finetune import check_source, prepare
from smose.training.trainer import Trainer
contender, run, out, warm, measure = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), *map(int, sys.argv[4:6])
torch.set_num_threads(1)
if contender == "train --resume fused":
    trainer = Trainer.resume(run, steps=read_checkpoint_json(run)["step"] + warm + measure)
else:
    trainer = prepare(check_source(run, "per-expert"), warm + measure, out, update=contender.split()[-1])
    out.mkdir(parents=True)
start_step = trainer.global_step
trainer.run(start_step + warm)
wall, cpu = time.perf_counter(), time.process_time()
trainer.run(start_step + warm + measure)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
trainer.close()
print(json.dumps({"sps": measure / wall, "cpu_ms_per_step": 1000 * cpu / measure,
                  "learner": type(trainer.learner).__name__}))
"""


def measure(contender: str, source: Path, work: Path, args: argparse.Namespace) -> dict:
    run = work / "run"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(source, run)  # train --resume writes into its run; fine-tuning into out
    out = work / "finetuned"
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", WORKER, contender, str(run), str(out), str(args.warm),
                           str(args.measure)], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"finetune_speed: {contender} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--source-steps", type=int, default=3000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--measure", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "source"
        try:
            run_smose("train", "--env", args.env, "--steps", str(args.source_steps), "--learning-starts",
                      str(args.learning_starts), "--eval-every", "0", "--threads", "1", "--out", str(source),
                      "--quiet")
            run_smose("distill", str(source), "--depth", "3", "--kind", "per-expert")
        except SmoseError as exc:
            sys.exit(f"finetune_speed: {exc}")
        samples: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
        for repeat in range(args.repeats):
            order = CONTENDERS[repeat % 3:] + CONTENDERS[: repeat % 3]
            for contender in order:
                samples[contender].append(measure(contender, source, work, args))
                print(f"repeat {repeat + 1}: {contender}: {samples[contender][-1]}", file=sys.stderr)

    median = {name: {key: statistics.median(s[key] for s in runs) for key in ("sps", "cpu_ms_per_step")}
              for name, runs in samples.items()}
    # the platform (operating system, kernel, C library) beside the header's machine: it bears on the speed
    record = {**header("finetune_speed.py", args.note), "platform": platform.platform(),
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "note")},
              "samples": samples, "median": median}
    base = median["train --resume fused"]["sps"]
    lines = [f"# Fine-tuning speed ({args.env})", "", f"Command: `{record['command']}`", "",
             f"Machine: {record['machine']} ({record['platform']}); smose {record['smose']}; {record['date']}. "
             f"{record['note']}".rstrip(), "",
             f"{args.measure} learning steps after {args.warm} warm-up ones, from a {args.source_steps}-step source "
             f"run's checkpoint (depth-3 per-expert trees); medians of {args.repeats} interleaved repeats, one "
             "thread each.", "",
             "| contender | learning steps/s | ms of CPU per step | steps/s relative to train --resume |",
             "|---|---|---|---|"]
    for name in CONTENDERS:
        m = median[name]
        lines.append(f"| {name} | {m['sps']:.1f} | {m['cpu_ms_per_step']:.2f} | {m['sps'] / base:.2f} |")
    write(args.out, record, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
